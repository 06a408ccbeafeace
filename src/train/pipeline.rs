//! The stages of training, in order, with validation, best-weight keeping and measurement.

use std::time::Instant;

use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Tensor};

use super::common::{codes_to_host, final_scores, held_out, restore, snapshot, torch_err};
use super::model::{ComposerNet, Encoder, mean_entropy, reconstruction_loss, straight_through};
use super::parallel::{chunks, par_chunks};
use super::rng::Rng;
use super::search::{self, Normal};
use super::{Init, TrainConfig, TrainError, TrainReport, Trained, device_name};
use crate::composer::{ComposerConfig, ComposerKind};
use crate::embeddings::Embeddings;
use crate::eval::{self, NEIGHBOUR_SAMPLES, NEIGHBOURS, NeighbourReference, Scores};
use crate::progress::{Criterion, EpochRecord, Progress, StageReport, Tick};

/// Distinguishes the validation split's random stream from the neighbour sample's.
const SPLIT_SALT: u64 = 0x5E_ED0F_5B1D;
/// Words per code sampled to learn the tables, and a cap. Deep tables model small residuals
/// and need many points: on the 20k GloVe head, 4k sampled words give RQ error 0.35, 16k 0.27.
const KMEANS_POINTS_PER_CODE: usize = 1024;
const KMEANS_MAX_POINTS: usize = 65_536;
const KMEANS_ITERATIONS: usize = 15;
/// Ridge of the least-squares fit, relative to the mean number of words per code.
const RIDGE: f64 = 1e-4;
/// ICM sweeps per re-encoding.
const ICM_SWEEPS: usize = 2;
/// A round must lower the validation error by this share to earn another.
const MIN_GAIN: f64 = 1e-3;
/// Learning rate of training with fixed codes, as a share of `--lr`.
const FIXED_CODES_LR_SHARE: f64 = 0.1;
/// Weight of the reconstruction through the encoder's straight-through codes when distilling.
const DISTILL_RECON_WEIGHT: f64 = 0.1;

/// Read-only state shared by all stages.
struct Data<'a> {
    cfg: &'a TrainConfig,
    host: &'a [f32],
    x: Tensor,
    n: i64,
    d: i64,
    dd: i64,
    k: i64,
    device: Device,
    code_kind: Kind,
    workers: usize,
    train_rows: Tensor,
    val_rows: Tensor,
    train_mask: Tensor,
    start: Instant,
}

/// What the stages report into.
struct Out<'a> {
    progress: &'a mut (dyn Progress + Send),
    stage: &'a mut String,
    reference: NeighbourReference,
    stages: Vec<StageReport>,
    trained_words: f64,
    trained_secs: f64,
    rng: Rng,
}

/// A CPU tensor over the embedding matrix without copying it.
///
/// # Safety
/// The tensor aliases `data`: it and every view of it must be dropped before `data` is, and
/// nothing may write through it. [`run`] keeps it (and its views) local and only reads it.
fn borrow_matrix(data: &[f32], n: i64, d: i64) -> Tensor {
    // SAFETY: `data` holds n*d initialised f32s, contiguous; see the contract above.
    unsafe { Tensor::from_blob(data.as_ptr().cast(), &[n, d], &[], Kind::Float, Device::Cpu) }
}

impl Data<'_> {
    fn elapsed(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    fn out_of_time(&self) -> bool {
        self.cfg.time_limit.is_some_and(|t| self.elapsed() >= t)
    }

    fn rows_tensor(&self, rows: &[usize]) -> Tensor {
        let v: Vec<i64> = rows.iter().map(|&r| r as i64).collect();
        Tensor::from_slice(&v).to_device(self.device)
    }

    /// Runs `f(state, x rows, their current codes)` over chunks of rows on the workers and
    /// gathers the new codes. `state` makes one worker's handles (called here, once per worker).
    ///
    /// Each worker writes its chunks' codes straight into one preallocated tensor: small
    /// per-chunk results kept until the end would sit between the chunks' freed temporaries in
    /// the allocator's arenas and keep them from shrinking (the full GloVe run grew by ~250 MB).
    fn encode_all<S: Send>(
        &self,
        out: &mut Out,
        codes: Option<&Tensor>,
        per_row: i64,
        state: impl Fn() -> S,
        f: impl Fn(&mut S, &Tensor, Option<&Tensor>) -> Tensor + Sync,
    ) -> Tensor {
        let parts = chunks(self.n, search::chunk_rows(per_row));
        let all = Tensor::zeros([self.n, self.dd], (self.code_kind, self.device));
        let states: Vec<_> = (0..self.workers.min(parts.len()))
            .map(|_| {
                (
                    self.x.shallow_clone(),
                    codes.map(Tensor::shallow_clone),
                    all.shallow_clone(),
                    state(),
                )
            })
            .collect();
        let t0 = Instant::now();
        let mut done = 0;
        par_chunks(
            states,
            &parts,
            |(x, c, dst, st), s, len| {
                let cc = c.as_ref().map(|c| c.narrow(0, s, len));
                let new = f(st, &x.narrow(0, s, len), cc.as_ref());
                // Chunks are disjoint rows, so the workers never write the same memory.
                let mut rows = dst.narrow(0, s, len);
                rows.copy_(&new);
            },
            |len| {
                done += len;
                out.progress.tick(&Tick {
                    done: done as u64,
                    samples_per_sec: Some(done as f64 / t0.elapsed().as_secs_f64().max(1e-9)),
                    ..Tick::default()
                });
            },
        );
        all
    }

    /// Decodes rows `rows` (host indices) to a host matrix.
    fn decode_rows(&self, codes: &Tensor, rows: &[usize], decoder: &Decoder) -> Vec<f32> {
        tch::no_grad(|| {
            let y = decoder
                .decode(&codes.index_select(0, &self.rows_tensor(rows)))
                .to_device(Device::Cpu)
                .to_kind(Kind::Float)
                .contiguous();
            Vec::<f32>::try_from(y.view(-1)).unwrap_or_default()
        })
    }

    /// Scores every word's decoded vector against the original on the workers, chunk by chunk,
    /// so that no decoded copy of the matrix is ever held.
    fn score(
        &self,
        codes: &Tensor,
        decoder: &Decoder,
        reference: &NeighbourReference,
    ) -> Result<Scores, TrainError> {
        let d = self.d as usize;
        let queries = self.decode_rows(codes, reference.rows(), decoder);
        let first = reference.scorer(self.host, &queries)?;
        let parts = chunks(self.n, search::chunk_rows(decoder.per_row()));
        let states: Vec<_> = (0..self.workers.min(parts.len()).max(1))
            .map(|_| {
                (
                    codes.shallow_clone(),
                    decoder.fork(),
                    first.fork(),
                    Vec::new(),
                )
            })
            .collect();
        let (states, results) = par_chunks(
            states,
            &parts,
            |(c, dec, scorer, buf), s, len| {
                let y = dec
                    .decode(&c.narrow(0, s, len))
                    .to_device(Device::Cpu)
                    .to_kind(Kind::Float)
                    .contiguous();
                buf.resize(len as usize * d, 0f32);
                y.copy_data(buf, len as usize * d);
                scorer.add(s as usize, buf)
            },
            |_| {},
        );
        results.into_iter().collect::<Result<(), _>>()?;
        let mut total = first;
        for (_, _, scorer, _) in states {
            total.merge(scorer);
        }
        Ok(total.finish())
    }

    /// Mean squared error per held-out word.
    fn val_mse(&self, codes: &Tensor, decoder: &Decoder) -> f64 {
        self.mse_of(codes, Some(&self.val_rows), decoder)
    }

    /// Mean squared error per word over `rows` (all words if `None`).
    fn mse_of(&self, codes: &Tensor, rows: Option<&Tensor>, decoder: &Decoder) -> f64 {
        let count = rows.map_or(self.n, |r| r.size()[0]);
        let parts = chunks(count, search::chunk_rows(decoder.per_row()));
        let states: Vec<_> = (0..self.workers.min(parts.len()))
            .map(|_| {
                (
                    self.x.shallow_clone(),
                    codes.shallow_clone(),
                    rows.map(Tensor::shallow_clone),
                    decoder.fork(),
                )
            })
            .collect();
        let (_, sums) = par_chunks(
            states,
            &parts,
            |(x, c, r, dec), s, len| {
                let (c, x) = match r {
                    Some(r) => {
                        let r = r.narrow(0, s, len);
                        (c.index_select(0, &r), x.index_select(0, &r))
                    }
                    None => (c.narrow(0, s, len), x.narrow(0, s, len)),
                };
                (dec.decode(&c) - x)
                    .square()
                    .sum(Kind::Double)
                    .double_value(&[])
            },
            |_| {},
        );
        sums.iter().sum::<f64>() / count.max(1) as f64
    }
}

/// What turns codes into vectors at some stage: the additive tables, or the composer.
enum Decoder {
    Additive(Tensor),
    Net(ComposerNet),
}

impl Decoder {
    fn fork(&self) -> Self {
        match self {
            Decoder::Additive(t) => Decoder::Additive(t.shallow_clone()),
            Decoder::Net(n) => Decoder::Net(n.shallow_clone()),
        }
    }

    fn decode(&self, codes: &Tensor) -> Tensor {
        match self {
            Decoder::Additive(t) => search::additive_decode(t, codes),
            Decoder::Net(n) => n.decode(codes),
        }
    }

    /// Floats of scratch per decoded row, to size chunks.
    fn per_row(&self) -> i64 {
        let c = match self {
            // The running sum, one gathered entry and the difference to the original.
            Decoder::Additive(t) => return t.size()[2] * 4,
            Decoder::Net(n) => *n.config(),
        };
        (c.num_codebooks * c.code_dim * 2 + c.hidden * 6 + c.out_dim * 2) as i64
    }
}

impl Out<'_> {
    fn begin(&mut self, name: &str, total: u64) {
        *self.stage = name.to_string();
        self.progress.stage_start(name, total);
    }

    fn finish(
        &mut self,
        data: &Data,
        name: &str,
        seconds: f64,
        codes: &Tensor,
        decoder: &Decoder,
    ) -> Result<(), TrainError> {
        super::release_free_memory();
        let scores = data.score(codes, decoder, &self.reference)?;
        let report = StageReport {
            stage: name.to_string(),
            mse: scores.mse,
            mean_cosine: scores.mean_cosine,
            neighbour_overlap: scores.neighbour_overlap,
            seconds,
        };
        self.progress.stage_end(&report);
        self.stages.push(report);
        Ok(())
    }
}

pub(super) fn run(
    emb: &Embeddings,
    cfg: &TrainConfig,
    device: Device,
    progress: &mut (dyn Progress + Send),
    stage: &mut String,
) -> Result<Trained, TrainError> {
    let start = Instant::now();
    let workers = cfg
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if device == Device::Cpu {
        // Parallelism comes from row chunks on plain threads (see `parallel`); LibTorch's own
        // spinning pool would only compete with them.
        tch::set_num_threads(1);
    }
    let n = emb.len();
    let d = emb.dim();
    let host = emb.matrix();
    let x_host = borrow_matrix(host, n as i64, d as i64);
    let x = if device == Device::Cpu {
        x_host.shallow_clone()
    } else {
        x_host
            .f_to_device(device)
            .map_err(|e| torch_err("setup", e))?
    };
    let (mut val, is_val) = held_out(n, cfg.val_fraction, cfg.seed ^ SPLIT_SALT);
    val.sort_unstable();
    let n_val = val.len();
    let train: Vec<usize> = (0..n).filter(|&r| !is_val[r]).collect();
    let mask: Vec<bool> = is_val.iter().map(|v| !v).collect();
    let dd = cfg.num_codebooks as i64;
    let k = cfg.num_codes as i64;
    let mut data = Data {
        cfg,
        host,
        x,
        n: n as i64,
        d: d as i64,
        dd,
        k,
        device,
        // The narrowest kind that holds every code: the full GloVe set's codes at K <= 256 take
        // 13 MB instead of 26 MB (as Int16), and the least-squares rounds hold two sets.
        code_kind: if k <= 1 << 8 {
            Kind::Uint8
        } else if k <= 1 << 15 {
            Kind::Int16
        } else {
            Kind::Int
        },
        workers,
        train_rows: Tensor::new(),
        val_rows: Tensor::new(),
        train_mask: Tensor::from_slice(&mask).to_device(device),
        start,
    };
    data.train_rows = data.rows_tensor(&train);
    data.val_rows = data.rows_tensor(&val);
    drop((train, val, is_val, mask));
    super::release_free_memory();

    *stage = "reference neighbours".into();
    progress.message(&format!(
        "{n} words of {d} dims on {} ({workers} worker threads); {n_val} held out for validation",
        device_name(device)
    ));
    let reference = NeighbourReference::new(host, d, NEIGHBOUR_SAMPLES, NEIGHBOURS, cfg.seed)?;
    let mut out = Out {
        progress,
        stage,
        reference,
        stages: Vec::new(),
        trained_words: 0.0,
        trained_secs: 0.0,
        rng: Rng::new(cfg.seed),
    };

    let composer_cfg = ComposerConfig {
        kind: cfg.composer,
        num_codebooks: cfg.num_codebooks,
        num_codes: cfg.num_codes,
        code_dim: cfg.code_dim.unwrap_or(d),
        hidden: cfg.hidden,
        out_dim: d,
    };
    let vs = nn::VarStore::new(device);
    let net = ComposerNet::new(&vs.root(), composer_cfg, &mut out.rng);
    let encoder = (cfg.init == Init::Random || cfg.distill).then(|| {
        Encoder::new(
            &vs.root(),
            d,
            cfg.hidden,
            cfg.num_codebooks,
            cfg.num_codes,
            &mut out.rng,
        )
    });
    let net_decoder = Decoder::Net(net.shallow_clone());
    // After least squares and ICM a linear composer has nothing left to learn with these codes,
    // and re-encoding through it is the ICM that already converged.
    let linear_is_optimal = cfg.init == Init::Rq
        && cfg.refine
        && cfg.lsq_rounds > 0
        && cfg.composer == ComposerKind::Linear
        && encoder.is_none();

    let mut codes = match cfg.init {
        Init::Rq => {
            let (mut tables, mut codes) = stage_rq(&data, &mut out)?;
            if cfg.refine && cfg.lsq_rounds > 0 {
                (tables, codes) = stage_lsq(&data, &mut out, tables, codes)?;
            }
            init_from_tables(&net, &tables, &mut out.rng);
            if linear_is_optimal {
                out.progress.message(
                    "composer: the least-squares tables are already the best linear composer for \
                     these codes; no gradient training needed",
                );
            } else if cfg.epochs > 0 {
                let t0 = Instant::now();
                out.begin("composer", 0);
                train_fixed(
                    &data,
                    &mut out,
                    "composer",
                    &vs,
                    &net,
                    encoder.as_ref(),
                    &codes,
                    cfg.epochs,
                )?;
                out.finish(
                    &data,
                    "composer",
                    t0.elapsed().as_secs_f64(),
                    &codes,
                    &net_decoder,
                )?;
            }
            codes
        }
        Init::Random => {
            let t0 = Instant::now();
            out.begin("end-to-end", 0);
            let enc = encoder.as_ref().expect("random init builds an encoder");
            train_end_to_end(&data, &mut out, &vs, &net, enc)?;
            let codes = data.encode_all(
                &mut out,
                None,
                dd * k * 2 + cfg.hidden as i64,
                || enc.shallow_clone(),
                |e, xc, _| e.logits(xc).argmax(-1, false),
            );
            out.finish(
                &data,
                "end-to-end",
                t0.elapsed().as_secs_f64(),
                &codes,
                &net_decoder,
            )?;
            codes
        }
    };

    if cfg.refine
        && cfg.refine_rounds > 0
        && !linear_is_optimal
        && (net.mapped_tables().is_some() || encoder.is_some())
    {
        codes = stage_refine(&data, &mut out, &vs, &net, encoder.as_ref(), codes)?;
    }

    *out.stage = "export".into();
    let composer = net.export()?;
    let codes = codes_to_host(codes, cfg.num_codes as u32, cfg.num_codebooks)?;
    let scores = final_scores(host, &out.reference, &composer, &codes, workers)?;
    let report = TrainReport {
        device: device_name(device),
        threads: workers,
        stages: out.stages.clone(),
        mse: scores.mse,
        mean_cosine: scores.mean_cosine,
        neighbour_overlap: scores.neighbour_overlap,
        code_usage: eval::code_usage(&codes),
        samples_per_sec: if out.trained_secs > 0.0 {
            out.trained_words / out.trained_secs
        } else {
            0.0
        },
        seconds: start.elapsed().as_secs_f64(),
    };
    Ok(Trained {
        codes,
        composer,
        report,
    })
}

fn stage_rq(data: &Data, out: &mut Out) -> Result<(Tensor, Tensor), TrainError> {
    let cfg = data.cfg;
    let t0 = Instant::now();
    out.begin("rq", data.n as u64);
    let n_train = data.train_rows.size()[0];
    let m = (n_train as usize)
        .min(KMEANS_POINTS_PER_CODE * cfg.num_codes)
        .min(KMEANS_MAX_POINTS) as i64;
    let beam = cfg.auto_beam(data.n as usize, data.d as usize) as i64;
    let tables = tch::no_grad(|| {
        let pick = out
            .rng
            .permutation(n_train as usize, data.device)
            .narrow(0, 0, m);
        let sample = data
            .x
            .index_select(0, &data.train_rows.index_select(0, &pick));
        // Training the tables along a beam (as faiss does) measured no better than greedy
        // residuals on the 20k head, at several times the cost.
        search::residual_kmeans(&sample, data.dd, data.k, KMEANS_ITERATIONS, 1, &mut out.rng)
    });
    // k-means' temporaries are freed, but the allocator keeps their pages for itself.
    super::release_free_memory();
    out.progress.message(&format!(
        "rq: tables by residual k-means on {m} words, every word encoded by beam search (width {beam})"
    ));
    let codes = data.encode_all(
        out,
        None,
        // A quarter of the chunk budget: on the full GloVe set this encodes faster (118 s instead
        // of 134 s for the stage, the temporaries stay in cache) and holds 20 MB less.
        beam * (data.k + data.d) * 12,
        || tables.shallow_clone(),
        |t, xc, _| search::beam_encode(xc, t, beam),
    );
    let decoder = Decoder::Additive(tables.shallow_clone());
    out.finish(data, "rq", t0.elapsed().as_secs_f64(), &codes, &decoder)?;
    Ok((tables, codes))
}

/// The joint least-squares tables for `codes`, over the training words, on the workers.
fn fit_tables(data: &Data, codes: &Tensor, old: &Tensor) -> Tensor {
    let (dd, k, d) = (data.dd, data.k, data.d);
    if dd * k > search::JOINT_LIMIT {
        return tch::no_grad(|| search::fit_blockwise(&data.x, codes, Some(&data.train_mask), old));
    }
    let parts = chunks(data.n, Normal::chunk_rows(dd));
    let states: Vec<_> = (0..data.workers.min(parts.len()))
        .map(|_| {
            (
                data.x.shallow_clone(),
                codes.shallow_clone(),
                data.train_mask.shallow_clone(),
                Normal::new(dd, k, d, data.device),
            )
        })
        .collect();
    let (states, _) = par_chunks(
        states,
        &parts,
        |(x, c, m, normal), s, len| {
            let (xc, cc) = search::chunk(x, c, Some(m), s, len);
            normal.add(&xc, &cc);
        },
        |_| {},
    );
    tch::no_grad(|| {
        let mut iter = states.into_iter().map(|(_, _, _, n)| n);
        let mut total = iter.next().expect("at least one worker");
        for other in iter {
            total.merge(&other);
        }
        total
            .solve(RIDGE)
            .unwrap_or_else(|| search::fit_blockwise(&data.x, codes, Some(&data.train_mask), old))
    })
}

fn stage_lsq(
    data: &Data,
    out: &mut Out,
    mut tables: Tensor,
    mut codes: Tensor,
) -> Result<(Tensor, Tensor), TrainError> {
    let cfg = data.cfg;
    let t0 = Instant::now();
    out.begin("lsq", data.n as u64);
    // Every word is compressed, so rounds are judged by the error over all words (which a round
    // cannot raise on the words it fits); the held-out error is logged to show generalisation.
    let mut best = data.mse_of(&codes, None, &Decoder::Additive(tables.shallow_clone()));
    for round in 1..=cfg.lsq_rounds {
        if data.out_of_time() {
            out.progress.message("lsq: time limit reached");
            break;
        }
        let r0 = Instant::now();
        let new_tables = fit_tables(data, &codes, &tables);
        out.begin("lsq", data.n as u64);
        let new_codes = data.encode_all(
            out,
            Some(&codes),
            data.k * 4 + data.d * 4,
            || new_tables.shallow_clone(),
            |t, xc, cc| search::icm(xc, cc.expect("lsq re-encodes current codes"), t, ICM_SWEEPS),
        );
        let decoder = Decoder::Additive(new_tables.shallow_clone());
        let all = data.mse_of(&new_codes, None, &decoder);
        let improved = all < best;
        out.progress.epoch(&EpochRecord {
            stage: "lsq".into(),
            epoch: round,
            train_loss: Some(all),
            val_mse: data.val_mse(&new_codes, &decoder),
            best: improved,
            judged_by: Criterion::AllWords,
            tau: None,
            learning_rate: None,
            samples_per_sec: data.n as f64 / r0.elapsed().as_secs_f64().max(1e-9),
            elapsed_secs: data.elapsed(),
        });
        if !improved {
            break;
        }
        let gain = (best - all) / best.max(f64::MIN_POSITIVE);
        (tables, codes, best) = (new_tables, new_codes, all);
        if gain < MIN_GAIN {
            break;
        }
    }
    let decoder = Decoder::Additive(tables.shallow_clone());
    out.finish(data, "lsq", t0.elapsed().as_secs_f64(), &codes, &decoder)?;
    Ok((tables, codes))
}

/// Sets the composer so that it decodes exactly as the additive tables do: code vectors are the
/// tables (projected onto their main directions when d' differs from d), the output map their
/// inverse projection (identity when d' = d), the bias zero; the mlp's hidden output is already
/// zero. The lstm only takes the code vectors.
fn init_from_tables(net: &ComposerNet, tables: &Tensor, rng: &mut Rng) {
    tch::no_grad(|| {
        let s = tables.size();
        let (dk, d) = (s[0] * s[1], s[2]);
        let e = net.config().code_dim as i64;
        let flat = tables.view([dk, d]);
        let (codebooks, w) = if e == d {
            (flat.copy(), Tensor::eye(d, (Kind::Float, tables.device())))
        } else {
            let gram = flat.tr().matmul(&flat).to_kind(Kind::Double);
            let (_, vecs) = gram.linalg_eigh("L");
            let take = e.min(d);
            let v = vecs.flip([1]).narrow(1, 0, take).to_kind(Kind::Float);
            let (mut cb, mut w) = (flat.matmul(&v), v);
            if e > d {
                // Extra dimensions start tiny but non-zero so that gradients can grow them.
                let dev = tables.device();
                cb = Tensor::cat(&[cb, rng.normal_tensor(dk, e - d, 1e-3, dev)], 1);
                w = Tensor::cat(&[w, rng.normal_tensor(d, e - d, 1e-3, dev)], 1);
            }
            (cb, w)
        };
        net.codebooks
            .shallow_clone()
            .copy_(&codebooks.view([s[0], s[1], e]));
        if net.config().kind != ComposerKind::Lstm {
            net.out_weight.shallow_clone().copy_(&w);
            let _ = net.out_bias.shallow_clone().zero_();
        }
    });
}

/// Adam over shuffled batches of the training words for up to `epochs` epochs, cosine-decaying
/// the learning rate to a tenth; keeps the weights of the best validation error (starting from
/// the weights given) and stops after `patience` epochs without a better one.
#[allow(clippy::too_many_arguments)]
fn epochs_loop(
    data: &Data,
    out: &mut Out,
    stage: &str,
    vs: &nn::VarStore,
    epochs: usize,
    learning_rate: f64,
    tau: &dyn Fn(usize) -> Option<f64>,
    step: &dyn Fn(&Tensor, usize) -> Tensor,
    validate: &dyn Fn() -> f64,
) -> Result<f64, TrainError> {
    let cfg = data.cfg;
    let mut opt = nn::Adam::default()
        .build(vs, learning_rate)
        .map_err(|e| torch_err(stage, e))?;
    let n_train = data.train_rows.size()[0];
    let bs = cfg.batch_size as i64;
    let steps = (n_train + bs - 1) / bs;
    out.progress
        .stage_start(stage, steps as u64 * epochs as u64);
    let mut best = validate();
    let mut saved = snapshot(vs);
    let mut stale = 0;
    let mut done = 0u64;
    for epoch in 0..epochs {
        if data.out_of_time() {
            out.progress
                .message(&format!("{stage}: time limit reached"));
            break;
        }
        let t0 = Instant::now();
        let phase = epoch as f64 / epochs.max(1) as f64;
        let lr = learning_rate * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * phase).cos()));
        opt.set_lr(lr);
        let order = data
            .train_rows
            .index_select(0, &out.rng.permutation(n_train as usize, data.device));
        let mut loss_sum = Tensor::zeros([], (Kind::Double, data.device));
        let mut last_loss = None;
        for s in 0..steps {
            let rows = order.narrow(0, s * bs, bs.min(n_train - s * bs));
            let loss = step(&rows, epoch);
            opt.backward_step(&loss);
            loss_sum += loss.detach().to_kind(Kind::Double);
            done += 1;
            if s % 50 == 49 || s + 1 == steps {
                let l = loss_sum.double_value(&[]) / (s + 1) as f64;
                last_loss = Some(l);
                let secs = t0.elapsed().as_secs_f64().max(1e-9);
                out.progress.tick(&Tick {
                    done,
                    loss: Some(l),
                    val_mse: Some(best),
                    samples_per_sec: Some(((s + 1) * bs).min(n_train) as f64 / secs),
                });
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        out.trained_words += n_train as f64;
        out.trained_secs += secs;
        let v = validate();
        let improved = v < best;
        out.progress.epoch(&EpochRecord {
            stage: stage.into(),
            epoch: epoch + 1,
            train_loss: last_loss,
            val_mse: v,
            best: improved,
            judged_by: Criterion::HeldOut,
            tau: tau(epoch),
            learning_rate: Some(lr),
            samples_per_sec: n_train as f64 / secs.max(1e-9),
            elapsed_secs: data.elapsed(),
        });
        if improved {
            best = v;
            saved = snapshot(vs);
            stale = 0;
        } else {
            stale += 1;
            if stale >= cfg.patience {
                break;
            }
        }
    }
    restore(vs, &saved);
    Ok(best)
}

/// Trains the composer (and, when distilling, the encoder) with every word's codes fixed.
#[allow(clippy::too_many_arguments)]
fn train_fixed(
    data: &Data,
    out: &mut Out,
    stage: &str,
    vs: &nn::VarStore,
    net: &ComposerNet,
    encoder: Option<&Encoder>,
    codes: &Tensor,
    epochs: usize,
) -> Result<f64, TrainError> {
    let cfg = data.cfg;
    let k = data.k;
    let step = |rows: &Tensor, epoch: usize| {
        let xb = data.x.index_select(0, rows);
        let cb = codes.index_select(0, rows).to_kind(Kind::Int64);
        let mut loss = reconstruction_loss(&net.decode(&cb), &xb);
        if let Some(enc) = encoder {
            let logits = enc.logits(&xb);
            let ce = logits.view([-1, k]).cross_entropy_for_logits(&cb.view(-1));
            let r = straight_through(&logits, cfg.tau_at(epoch, epochs));
            let y = net.compose(&net.code_vectors_soft(&r.straight_through));
            loss = loss + ce + reconstruction_loss(&y, &xb) * DISTILL_RECON_WEIGHT;
        }
        loss
    };
    let decoder = Decoder::Net(net.shallow_clone());
    let validate = || data.val_mse(codes, &decoder);
    let tau = |e: usize| encoder.map(|_| cfg.tau_at(e, epochs));
    // The codes and tables already fit well; a full-size Adam step would first undo that.
    let lr = cfg.learning_rate * FIXED_CODES_LR_SHARE;
    epochs_loop(data, out, stage, vs, epochs, lr, &tau, &step, &validate)
}

/// The paper's recipe: encoder and composer trained end to end through straight-through codes.
fn train_end_to_end(
    data: &Data,
    out: &mut Out,
    vs: &nn::VarStore,
    net: &ComposerNet,
    encoder: &Encoder,
) -> Result<f64, TrainError> {
    let cfg = data.cfg;
    let epochs = cfg.epochs;
    let step = |rows: &Tensor, epoch: usize| {
        let xb = data.x.index_select(0, rows);
        let r = straight_through(&encoder.logits(&xb), cfg.tau_at(epoch, epochs));
        let y = net.compose(&net.code_vectors_soft(&r.straight_through));
        let mut loss = reconstruction_loss(&y, &xb);
        if cfg.entropy_weight > 0.0 {
            #[allow(clippy::assign_op_pattern)] // out of place, as autograd expects
            {
                loss = loss + mean_entropy(&r.soft) * cfg.entropy_weight;
            }
        }
        loss
    };
    let validate = || {
        tch::no_grad(|| {
            let xv = data.x.index_select(0, &data.val_rows);
            let codes = encoder.logits(&xv).argmax(-1, false);
            let err = (net.decode(&codes) - &xv).square().sum(Kind::Double);
            err.double_value(&[]) / data.val_rows.size()[0].max(1) as f64
        })
    };
    let tau = |e: usize| Some(cfg.tau_at(e, epochs));
    epochs_loop(
        data,
        out,
        "end-to-end",
        vs,
        epochs,
        cfg.learning_rate,
        &tau,
        &step,
        &validate,
    )
}

/// Squared error of each row.
fn row_errors(y: &Tensor, x: &Tensor) -> Tensor {
    (y - x).square().sum_dim_intlist(1, false, None::<Kind>)
}

/// New codes for rows `xc` (current codes `cc`) through the composer: ICM on the composer's
/// additive part with the rest held at its current value, and the encoder's argmax; each row
/// keeps whichever codes decode closest, its current ones included.
fn reencode(
    net: &ComposerNet,
    mapped: Option<&Tensor>,
    encoder: Option<&Encoder>,
    xc: &Tensor,
    cc: &Tensor,
) -> Tensor {
    let cc = cc.to_kind(Kind::Int64);
    let mut best_codes = cc.shallow_clone();
    let mut best_err = row_errors(&net.decode(&cc), xc);
    let mut consider = |cand: Tensor| {
        let err = row_errors(&net.decode(&cand), xc);
        let better = err.lt_tensor(&best_err);
        best_codes = cand.where_self(&better.unsqueeze(1), &best_codes);
        best_err = err.minimum(&best_err);
    };
    if let Some(m) = mapped {
        let s = net
            .code_vectors(&cc)
            .sum_dim_intlist(1, false, None::<Kind>);
        if let Some(offset) = net.offset_of_sum(&s) {
            consider(search::icm(&(xc - offset), &cc, m, ICM_SWEEPS));
        }
    }
    if let Some(enc) = encoder {
        consider(enc.logits(xc).argmax(-1, false));
    }
    best_codes
}

/// Re-encodes every word through the trained composer, keeping new codes only where they decode
/// closer, then fine-tunes the composer; repeats while the error over all words falls.
fn stage_refine(
    data: &Data,
    out: &mut Out,
    vs: &nn::VarStore,
    net: &ComposerNet,
    encoder: Option<&Encoder>,
    mut codes: Tensor,
) -> Result<Tensor, TrainError> {
    let cfg = data.cfg;
    let t0 = Instant::now();
    out.begin("refine", data.n as u64);
    let decoder = Decoder::Net(net.shallow_clone());
    let mut best = data.mse_of(&codes, None, &decoder);
    let fine_tune = (cfg.epochs / 4).max(1);
    for round in 1..=cfg.refine_rounds {
        if data.out_of_time() {
            out.progress.message("refine: time limit reached");
            break;
        }
        let r0 = Instant::now();
        out.begin("refine", data.n as u64);
        let mapped = tch::no_grad(|| net.mapped_tables());
        let new_codes = data.encode_all(
            out,
            Some(&codes),
            decoder.per_row() * 3 + data.k * 4,
            || {
                (
                    net.shallow_clone(),
                    mapped.as_ref().map(Tensor::shallow_clone),
                    encoder.map(Encoder::shallow_clone),
                )
            },
            |(n, m, e), xc, cc| {
                let cc = cc.expect("refine re-encodes current codes");
                reencode(n, m.as_ref(), e.as_ref(), xc, cc)
            },
        );
        let changed = tch::no_grad(|| {
            new_codes
                .ne_tensor(&codes)
                .any_dim(1, false)
                .sum(Kind::Int64)
                .int64_value(&[])
        });
        codes = new_codes;
        let after = data.mse_of(&codes, None, &decoder);
        out.progress.message(&format!(
            "refine round {round}: {changed} words took new codes; error over all words {after:.4}"
        ));
        if cfg.epochs > 0 {
            train_fixed(data, out, "fine-tune", vs, net, encoder, &codes, fine_tune)?;
        }
        let all = data.mse_of(&codes, None, &decoder);
        let improved = all < best;
        out.progress.epoch(&EpochRecord {
            stage: "refine".into(),
            epoch: round,
            train_loss: Some(all),
            val_mse: data.val_mse(&codes, &decoder),
            best: improved,
            judged_by: Criterion::AllWords,
            tau: None,
            learning_rate: None,
            samples_per_sec: data.n as f64 / r0.elapsed().as_secs_f64().max(1e-9),
            elapsed_secs: data.elapsed(),
        });
        let gain = (best - all) / best.max(f64::MIN_POSITIVE);
        best = best.min(all);
        if gain < MIN_GAIN {
            break;
        }
    }
    out.finish(data, "refine", t0.elapsed().as_secs_f64(), &codes, &decoder)?;
    Ok(codes)
}
