//! `conditioned`: the conditioned composer (implicit neural codebooks, Huijben et al. 2024)
//! trained on top of the additive tables, and every word re-encoded through it by beam search.
//!
//! The network starts with its output weight at zero, so it decodes exactly as the least-squares
//! tables do; it is trained on the fixed codes (loss on the final reconstruction only: a loss
//! summed over every step pulled the final error up in trials), then each round re-encodes every
//! word by beam search through the network and trains again. A word keeps its codes unless the
//! search finds codes that decode closer, so re-encoding never makes a word worse.

use std::time::Instant;

use tch::{Kind, Tensor};

use super::gradient::{train_codes_fixed, weighted_loss};
use super::{MIN_GAIN, Nets, changed_rows};
use crate::progress::Criterion;
use crate::train::TrainError;
use crate::train::learner::{self, Batch, Learner};
use crate::train::learner::{Plan, Schedule};
use crate::train::model::ComposerNet;
use crate::train::quantize::rq::trace_back;
use crate::train::reporter::Reporter;
use crate::train::rng::Rng;
use crate::train::training_set::{Decoder, TrainingSet, passed};
use crate::train_config::{REFINE_ROUNDS, STEP_SEARCH_WORK};

/// Learning rate of the network alone, as a share of `--lr`: `sqrt(NET_LR_WIDTH / d)`, 3 at
/// GloVe's d = 50 and 0.77 at mpnet's 768. Adam moves every weight by about the rate, and a
/// hidden unit sums 2·d of them, so its change grows like √d. Measured (lsq start, `--seed 1`,
/// `--refine-rounds 0`): GloVe's 20k head at K=256 D=8 (lsq 1.3892), h = 128, 60 epochs: 1×
/// 1.3458, 3× 1.3275; h = 256: 3× 1.2727, 10× 1.2676. The mpnet table at D=8 (lsq 3.3048), h =
/// 128: 3× was 3.2964 after 21 epochs, 1× 3.2628 after 9, 0.5× 3.2693 after 8 (and with the
/// older h = 64, 20 epochs: 0.1× 3.4887, 1× 3.4631, 3× 3.474 from an lsq 3.4965).
const NET_LR_WIDTH: f64 = 450.0;
/// Learning rate of the rounds that also tune the tables, as a share of `--lr`: the tables start
/// at the least-squares optimum for their codes, so they move more slowly.
const TABLES_LR_SHARE: f64 = 0.2;

/// Floats of scratch per row of [`search`]: per step, the `beam·K` additive scores, and for the
/// `beam·candidates` extensions their code vectors, hidden layer, new sums and errors.
fn memory_per_row(beam: i64, candidates: i64, k: i64, d: i64, h: i64) -> i64 {
    (beam * k * 3 + beam * candidates * (d * 3 + h * 2 + 4)).max(1)
}

/// Codes `[B, D]` for rows `x` `[B, d]` by beam search through the conditioned composer: at step
/// i each of the `beam` partial encodings is extended by the `candidates` codes of table i
/// nearest (by plain distance) to what it leaves unexplained, each extension decoded through the
/// network, and the `beam` closest kept. Returns the codes of the closest full encoding and its
/// squared error per row.
///
/// It carries what each partial encoding leaves unexplained, `r = x - x̂`, rather than `x̂`: an
/// extension leaves `r - e - W_o z`, one matrix product onto `r - e` (`addmm`), and its hidden
/// layer `z` is formed in place in the gathered code parts. The output layer of the `beam ·
/// candidates` extensions is most of the work. The first round over all 400,000 GloVe words at
/// K=256 D=20 (h = 112, 2 threads, two quiet runs on one day) went from 1,724 to 2,385 words/s;
/// GloVe's 20k head at D=20 from 1,179 to 1,308 with the same codes; the same shapes in PyTorch
/// on one thread from 940 to 1,103.
pub(crate) fn search(
    net: &ComposerNet,
    x: &Tensor,
    beam: i64,
    candidates: i64,
) -> (Tensor, Tensor) {
    let cond = net
        .cond
        .as_ref()
        .expect("search runs on the conditioned composer");
    let s = net.codebooks.size();
    let (positions, k, d) = (s[0], s[1], s[2]);
    let b = x.size()[0];
    let a = candidates.min(k);
    // `-W_oᵀ` `[h, d]`, so that one addmm subtracts the network's output.
    let minus_out = -cond.out_weight.tr();
    let h = minus_out.size()[0];
    // What each partial encoding leaves unexplained, `[B, w, d]`.
    let mut residual = x.unsqueeze(1);
    let (mut from, mut code) = (Vec::new(), Vec::new());
    let mut err = Tensor::zeros([b, 1], (Kind::Float, x.device()));
    for i in 0..positions {
        let table = net.codebooks.get(i);
        let norms = table.square().sum_dim_intlist(1, false, None::<Kind>);
        let w = residual.size()[1];
        let score = norms.view([1, 1, k]) - residual.matmul(&table.tr()) * 2.0;
        let (_, cand) = score.topk(a, 2, false, false);
        let flat = cand.reshape([-1]);
        let e = table.index_select(0, &flat).view([b, w, a, d]);
        // The reconstruction so far, seen by the network through W_s once per entry.
        let sum_part = (x.unsqueeze(1) - &residual)
            .matmul(&cond.sum_weight.tr())
            .unsqueeze(2);
        let mut z = cond
            .code_part(&table, i)
            .index_select(0, &flat)
            .view([b, w, a, h]);
        let _ = z.g_add_(&sum_part).relu_();
        let left = (residual.unsqueeze(2) - &e)
            .view([b * w * a, d])
            .addmm(&z.view([b * w * a, h]), &minus_out)
            .view([b, w * a, d]);
        let dist = left.square().sum_dim_intlist(2, false, None::<Kind>);
        let keep = beam.min(w * a);
        let (val, ix) = dist.topk(keep, 1, false, true);
        from.push(ix.divide_scalar_mode(a, "floor"));
        code.push(cand.view([b, w * a]).gather(1, &ix, false));
        residual = left.gather(1, &ix.unsqueeze(2).expand([b, keep, d], false), false);
        err = val;
    }
    (trace_back(&from, &code), err.select(1, 0))
}

/// New codes for rows `xc` whose current codes are `cc`: the search's, where they decode closer.
fn reencode(net: &ComposerNet, xc: &Tensor, cc: &Tensor, beam: i64, candidates: i64) -> Tensor {
    let cc = cc.to_kind(Kind::Int64);
    let (found, found_err) = search(net, xc, beam, candidates);
    let current_err = (net.decode(&cc) - xc)
        .square()
        .sum_dim_intlist(1, false, None::<Kind>);
    found.where_self(&found_err.lt_tensor(&current_err).unsqueeze(1), &cc)
}

/// The network learning while the codes follow it (QINCo's training): each batch is first
/// re-encoded by the search through the current network, a row keeping its codes unless the
/// search decodes it closer, and the step is taken on the new codes. Every word's codes `[N, D]`
/// are updated in place.
struct SearchedCodes<'a> {
    net: &'a ComposerNet,
    codes: &'a Tensor,
    beam: i64,
    candidates: i64,
    /// `[N]` weight of each word's squared error in the loss; `None`: all 1.
    weights: Option<&'a Tensor>,
}

impl Learner for SearchedCodes<'_> {
    fn loss(&self, batch: &Batch, _tau: f64, _rng: &mut Rng) -> Tensor {
        let cc = self.codes.index_select(0, batch.rows);
        let new = tch::no_grad(|| reencode(self.net, batch.x, &cc, self.beam, self.candidates));
        let _ =
            self.codes
                .shallow_clone()
                .index_copy_(0, batch.rows, &new.to_kind(self.codes.kind()));
        weighted_loss(&self.net.decode(&new), batch, self.weights)
    }

    fn val_mse(&self, set: &TrainingSet) -> f64 {
        set.fit_error(self.codes, &Decoder::Net(self.net.shallow_clone()))
    }

    fn uses_tau(&self) -> bool {
        false
    }

    fn held_out_mse(&self, set: &TrainingSet) -> Option<f64> {
        set.val_mse(self.codes, &Decoder::Net(self.net.shallow_clone()))
    }

    fn judged_by(&self) -> Criterion {
        Criterion::all_words(self.weights.is_some())
    }
}

/// Trains the conditioned composer: first on the additive codes with the tables fixed; then for
/// up to `--refine-rounds` rounds every word is re-encoded through the network, after (from the
/// second round) training tables and network together on the codes of the round before, or,
/// with `--step-search-batches`, training with every batch re-encoded as the network learns.
/// Stops when a round gains too little.
pub(super) fn stage_conditioned(
    set: &TrainingSet,
    out: &mut Reporter,
    nets: &Nets,
    codes: Tensor,
) -> Result<Tensor, TrainError> {
    let cfg = set.cfg;
    let net = &nets.composer;
    let t0 = Instant::now();
    let decoder = Decoder::Net(net.shallow_clone());
    // Judged, and trained, by the lsq stage's error (each word's weighted as --word-weight says).
    let additive = set.fit_error(&codes, &decoder);
    let epochs = cfg.step_epochs_for(set.train_rows.size()[0] as usize);
    out.settle("step_hidden", net.config().hidden);
    out.settle("step_epochs", epochs);
    out.progress.message(&format!(
        "conditioned: a step network of {} hidden units shared by the {} steps, {epochs} epochs \
         on the fixed codes, starting at the additive decode (error over all words {additive:.4})",
        net.config().hidden,
        net.config().num_codebooks
    ));
    let (beam, candidates) = (cfg.step_beam as i64, cfg.step_candidates as i64);
    let (k, d, h) = (set.k, set.d, net.config().hidden as i64);
    let rounds = cfg.step_rounds_for(set.n as usize, d as usize, h as usize);
    out.settle("step_rounds", rounds);
    let plan = |stage, epochs, share| Plan {
        stage,
        epochs,
        learning_rate: cfg.learning_rate * share,
        schedule: Schedule::WarmupCosine,
        // The first epochs may be worse than the start (Adam's first steps, the ramp): GloVe
        // 20k at K=256 D=8 was above the lsq error for two epochs, then 1% below it; at D=20
        // the third epoch was still above and --patience 3 stopped it there.
        min_epochs: epochs / 2,
    };
    // The tables start at the least-squares optimum for these codes: Adam's first steps, of
    // about the learning rate on every parameter whatever its gradient, would only disturb
    // them. So the network first learns alone on the fixed codes.
    if epochs > 0 {
        let _ = net.codebooks.shallow_clone().set_requires_grad(false);
        let r = train_codes_fixed(
            set,
            out,
            nets,
            &codes,
            plan("conditioned", epochs, (NET_LR_WIDTH / d as f64).sqrt()),
            true,
        );
        let _ = net.codebooks.shallow_clone().set_requires_grad(true);
        r?;
    }
    let mut best = set.fit_error(&codes, &decoder);
    out.progress.message(&format!(
        "conditioned: trained on the additive codes, error over all words {additive:.4} -> {best:.4}"
    ));
    // Updated in place by the searched training; a copy so that the caller's codes stay.
    let codes = codes.copy();
    let round_epochs = (epochs / 4).max(1);
    // A round starts only when one as long as the last ends within --time-limit.
    let mut round_secs = 0.0;
    if cfg.refine_rounds.is_none() && rounds < REFINE_ROUNDS {
        out.progress.message(&format!(
            "conditioned: {rounds} search round over all {} words (a round's search costs more \
             than {:.1e} multiply-adds; --refine-rounds sets more)",
            set.n, STEP_SEARCH_WORK as f64
        ));
    }
    for round in 1..=rounds {
        if set.no_time_for(round_secs) {
            out.progress.message("conditioned: time limit reached");
            break;
        }
        let r0 = Instant::now();
        if epochs > 0 && cfg.step_search_batches {
            let learner = SearchedCodes {
                net,
                codes: &codes,
                beam,
                candidates,
                weights: set.weights.as_ref(),
            };
            let stage = "conditioned search";
            let p = plan(stage, round_epochs, TABLES_LR_SHARE);
            learner::fit(set, out, &nets.vs, &learner, p)?;
        } else if epochs > 0 && round > 1 {
            let p = plan("conditioned fine-tune", round_epochs, TABLES_LR_SHARE);
            train_codes_fixed(set, out, nets, &codes, p, true)?;
        }
        out.begin("conditioned encode", set.n as u64);
        // Past --time-limit the remaining words keep their codes (a word keeps its codes
        // unless the search decodes it closer, so a cut search loses nothing either).
        let deadline = set.deadline();
        let new_codes = tch::no_grad(|| {
            set.encode_all(
                out,
                Some(&codes),
                memory_per_row(beam, candidates, k, d, h),
                || net.shallow_clone(),
                |n, xc, cc| {
                    let cc = cc.expect("the search re-encodes current codes");
                    if passed(deadline) {
                        return cc.copy();
                    }
                    reencode(n, xc, cc, beam, candidates)
                },
            )
        });
        let changed = changed_rows(&new_codes, &codes);
        codes.shallow_clone().copy_(&new_codes);
        let all = set.fit_error(&codes, &decoder);
        out.progress.message(&format!(
            "conditioned round {round}: every word searched (beam {beam}, {candidates} \
             candidates), {changed} took new codes"
        ));
        let improved = all < best;
        let val_mse = set.val_mse(&codes, &decoder);
        out.progress
            .epoch(&set.round_record("conditioned", round, all, val_mse, improved, r0));
        round_secs = r0.elapsed().as_secs_f64();
        let gain = (best - all) / best.max(f64::MIN_POSITIVE);
        best = best.min(all);
        if gain < MIN_GAIN {
            break;
        }
    }
    out.finish(
        set,
        "conditioned",
        t0.elapsed().as_secs_f64(),
        &codes,
        &decoder,
    )?;
    Ok(codes)
}

#[cfg(test)]
mod tests {
    use tch::nn;

    use super::*;
    use crate::composer::{ComposerConfig, ComposerKind};
    use crate::train::quantize::additive::additive_decode;
    use crate::train::rng::Rng;

    fn net(rng: &mut Rng, out_scale: f64) -> (nn::VarStore, ComposerNet) {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let cfg = ComposerConfig {
            kind: ComposerKind::Conditioned,
            num_codebooks: 3,
            num_codes: 8,
            code_dim: 6,
            hidden: 5,
            out_dim: 6,
        };
        let net = ComposerNet::new(&vs.root(), cfg, rng);
        let cond = net.cond.as_ref().unwrap();
        tch::no_grad(|| {
            let w = rng.normal_of(&[6, 5], out_scale);
            cond.out_weight.shallow_clone().copy_(&w);
        });
        (vs, net)
    }

    #[test]
    fn exhaustive_search_finds_the_codes_that_decode_each_row() {
        let mut rng = Rng::new(5);
        let (_vs, net) = net(&mut rng, 0.5);
        let codes = rng.integers(8, &[40, 3]);
        let x = tch::no_grad(|| net.decode(&codes));
        // 8 candidates of 8 codes and a beam of 64 = 8² keep every prefix: exhaustive.
        let (found, err) = tch::no_grad(|| search(&net, &x, 64, 8));
        let again = tch::no_grad(|| net.decode(&found));
        let max_err = err.max().double_value(&[]);
        assert!(max_err < 1e-8, "{max_err}");
        let diff = (again - &x).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "{diff}");
    }

    #[test]
    fn zero_output_weight_decodes_as_the_tables_and_search_never_worsens_a_row() {
        let mut rng = Rng::new(6);
        let (_vs, net) = net(&mut rng, 0.0);
        let codes = rng.integers(8, &[30, 3]);
        let additive = additive_decode(&net.codebooks, &codes);
        let y = tch::no_grad(|| net.decode(&codes));
        assert!(y.equal(&additive));
        // Targets off the code grid: a narrow search may do worse than the given codes, but the
        // re-encoding keeps the given ones then.
        let x = &additive + rng.normal_of(&[30, 6], 0.3);
        let err = |c: &Tensor| {
            tch::no_grad(|| {
                (net.decode(c) - &x)
                    .square()
                    .sum_dim_intlist(1, false, None::<Kind>)
            })
        };
        let before = err(&codes);
        let after = err(&tch::no_grad(|| reencode(&net, &x, &codes, 1, 1)));
        let worse = after.gt_tensor(&(&before + 1e-6)).any().int64_value(&[]);
        assert_eq!(worse, 0);
    }
}
