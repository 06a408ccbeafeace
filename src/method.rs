//! The names of the ways codes can be learned. Lives outside the trainer so that the command line
//! and readers of [`crate::compressed::Metadata::method`] need no LibTorch.

/// How codes are learned; recorded in [`crate::compressed::Metadata::method`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, clap::ValueEnum)]
pub enum Method {
    /// KD codes: the staged pipeline of `kdcompress::train::train` (Chen, Min & Sun 2018).
    #[default]
    #[value(name = "kd")]
    #[serde(rename = "kd")]
    Kd,
    /// Deep compositional code learning (Shu & Nakayama 2018): Gumbel-softmax encoder, decoder a
    /// plain sum of code vectors (the `sum` composer).
    #[value(name = "dccl")]
    #[serde(rename = "dccl")]
    Dccl,
    /// Differentiable product quantization, softmax variant (Chen, Li & Sun 2020); `split`.
    #[value(name = "dpq-sx")]
    #[serde(rename = "dpq-sx")]
    DpqSx,
    /// Differentiable product quantization, vector-quantization variant; `split`.
    #[value(name = "dpq-vq")]
    #[serde(rename = "dpq-vq")]
    DpqVq,
}

impl Method {
    /// The name on the command line and in [`crate::compressed::Metadata::method`].
    pub fn name(self) -> &'static str {
        match self {
            Method::Kd => "kd",
            Method::Dccl => "dccl",
            Method::DpqSx => "dpq-sx",
            Method::DpqVq => "dpq-vq",
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
