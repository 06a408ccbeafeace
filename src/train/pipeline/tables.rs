//! The stages without gradients: `rq` (residual k-means tables, beam-search codes) and `lsq`
//! (tables refit by least squares, codes by ICM), and the composer set to decode as the tables.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use tch::{Kind, Tensor};

use super::MIN_GAIN;
use crate::composer::ComposerKind;
use crate::train::model::ComposerNet;
use crate::train::parallel::{chunks, par_chunks, with_torch_threads};
use crate::train::quantize::additive::{additive_decode, chunk};
use crate::train::quantize::kmeans::KMeans;
use crate::train::quantize::lsq::{self, NormalEquations};
use crate::train::quantize::rq;
use crate::train::quantize::{beam, cg, ils};
use crate::train::reporter::Reporter;
use crate::train::rng::Rng;
use crate::train::training_set::{Decoder, TrainingSet, passed};
use crate::train::{TrainError, allocator};

/// Words per code sampled to learn the tables, and a cap: deep tables model small residuals
/// and need many points.
const KMEANS_POINTS_PER_CODE: usize = 1024;
const KMEANS_MAX_POINTS: usize = 65_536;
/// Most residuals (of the `--train-beam` best partial encodings of the sampled words) one
/// table's k-means sees. mpnet at K=256 D=8, beam 5 (106k residuals): all of them gave rq
/// 3.4774 / nn@10 0.3383, a draw of 65,536 3.5389 / 0.3304.
const KMEANS_MAX_BEAM_POINTS: usize = 4 * KMEANS_MAX_POINTS;
/// Lloyd iterations per progressive round, and the rounds (faiss's residual quantizer's
/// defaults): see `quantize::kmeans` for why the rounds matter in high dimensions.
const KMEANS_ITERATIONS: usize = 10;
const KMEANS_ROUNDS: usize = 10;
/// Ridge of the least-squares fit, relative to the mean number of words per code.
const RIDGE: f64 = 1e-4;
/// Largest D·K whose lsq tables come from the dense `DK × DK` solve; beyond, conjugate
/// gradients warm-started from the previous round's tables are as good and cheaper (`--seed 1`,
/// dense → CG): GloVe 20k K=256 D=8 lsq 1.4648 / nn@10 0.6530 in 10.0 s → 1.4657 / 0.6548 in
/// 7.6 s; mpnet's first 8,000 words K=256 D=8 2.4646 in 5.7 s → 2.4648 in 4.7 s; the 5k fixture
/// K=32 D=32 0.0908 in 4.1 s → 0.0908 in 3.2 s. At GloVe 20k K=32 D=12 (384) both took 3.6 s.
const DENSE_LIMIT: i64 = 512;
/// Most conjugate-gradient steps of a least-squares fit too large to solve densely, and the
/// residual, relative to the right-hand side, at which they stop.
const CG_ITERATIONS: usize = 50;
const CG_TOLERANCE: f64 = 1e-3;
/// Annealed lsq rounds end early when the best error of the last `ANNEAL_WINDOW` rounds is less
/// than `ANNEAL_MIN_GAIN` below the best before them. On the mpnet table at K=256 D=20 the 24
/// rounds after the first gained 0.16% in all (2.0728 -> 2.0695, about 8 s each); on GloVe's 20k
/// head at D=8 every window of 5 gains 0.3-4% to the last round, so all 25 run there.
const ANNEAL_WINDOW: usize = 5;
const ANNEAL_MIN_GAIN: f64 = 1e-3;
/// Width up to which the annealing noise keeps its spread; wider vectors get it louder by
/// [`anneal_noise_scale`].
const ANNEAL_NOISE_WIDTH: f64 = 50.0;
/// Exponent of the width in [`anneal_noise_scale`], and its most.
const ANNEAL_NOISE_EXPONENT: f64 = 0.2;
const ANNEAL_NOISE_MOST: f64 = 2.0;
/// Least share of the words for which the first lsq round's beam search must find closer codes
/// than the local search with its perturbation trials for the beam search to go on in the later
/// rounds (in place of the trials). Measured in that round (`--seed 1`): GloVe's 20k head at
/// K=256 D=8 21%, D=20 4.6%, D=32 1.4%; the mpnet table at D=8 0.9%. Where it was below 2% the
/// beam's rounds reached the same error as the trials', only later (GloVe D=32 0.0052 either
/// way, 48.7 s against 31.6 s for the stage; mpnet D=8 3.3036 against 3.3049, 33.6 s against
/// 20.1 s); above, lower errors (GloVe D=8 1.3903 against 1.4672, D=20 0.0742 against 0.0772).
const BEAM_MIN_SHARE: f64 = 0.02;
/// Least share by which a plain lsq round with the beam search must lower the error over all
/// words to earn another beam round; below it (and above [`MIN_GAIN`]) the rounds go on with
/// the perturbation trials alone, which cost less. On large inputs a
/// beam round costs 1.6-2.6 trial rounds and gains far more at first: all 400,000 GloVe words
/// at K=256 D=20 (`--seed 1`), after the rq stage's 0.2928 (37 s), beam rounds of about 35 s
/// gave 0.2509, 0.2396, 0.2343, 0.2310, 0.2287, 0.2270, 0.2256, 0.2245 (the eighth gained
/// 0.49%), where 25 trial rounds of 21.5 s each had reached 0.2449; at D=8 2.6439, 2.6120,
/// 2.5937, 2.5814 (0.47%), where 14 trial rounds (55 s) reached 2.5826.
const BEAM_MIN_GAIN: f64 = 5e-3;
/// ICM sweeps per re-encoding.
pub(super) const ICM_SWEEPS: usize = 2;

/// Residual k-means tables on a sample of the training words; every word encoded by beam search.
pub(super) fn stage_rq(
    set: &TrainingSet,
    out: &mut Reporter,
) -> Result<(Tensor, Tensor), TrainError> {
    let cfg = set.cfg;
    let t0 = Instant::now();
    out.begin("rq", set.n as u64);
    let n_train = set.train_rows.size()[0];
    let m = (n_train as usize)
        .min(KMEANS_POINTS_PER_CODE * cfg.num_codes)
        .min(KMEANS_MAX_POINTS) as i64;
    let beam = cfg.auto_beam(set.n as usize, set.d as usize) as i64;
    let tables = tch::no_grad(|| {
        let pick = out
            .rng
            .permutation(n_train as usize, set.device)
            .narrow(0, 0, m);
        let sample = set
            .x
            .index_select(0, &set.train_rows.index_select(0, &pick));
        let kmeans = KMeans {
            k: set.k,
            iterations: KMEANS_ITERATIONS,
            progressive_rounds: KMEANS_ROUNDS,
            workers: set.workers,
        };
        rq::residual_kmeans(
            &sample,
            set.num_codebooks,
            &kmeans,
            cfg.train_beam as i64,
            KMEANS_MAX_BEAM_POINTS as i64,
            &mut out.rng,
        )
    });
    // k-means' temporaries are freed, but the allocator keeps their pages for itself.
    allocator::release_free_memory();
    out.progress.message(&format!(
        "rq: tables by residual k-means on {m} words, every word encoded by beam search (width {beam})"
    ));
    // The pairwise search when its table fits (K=256 up to D=32): the same codes, faster.
    let codes = match (set.device == tch::Device::Cpu)
        .then(|| with_torch_threads(set.workers, || ils::PairTerms::new(&tables)))
        .flatten()
    {
        Some(terms) => set.encode_all(
            out,
            None,
            beam::memory_per_row(set.k, set.num_codebooks),
            || terms.shallow_clone(),
            |t, xc, _| beam::encode(t, xc, beam as usize),
        ),
        None => set.encode_all(
            out,
            None,
            rq::memory_per_row(beam, set.k, set.d),
            || tables.shallow_clone(),
            |t, xc, _| rq::beam_encode(xc, t, beam),
        ),
    };
    let decoder = Decoder::Additive(tables.shallow_clone());
    out.finish(set, "rq", t0.elapsed().as_secs_f64(), &codes, &decoder)?;
    Ok((tables, codes))
}

/// The joint least-squares tables for `codes`, over the training words, on the workers: the
/// dense solve up to D·K = [`DENSE_LIMIT`] (on an accelerator [`lsq::JOINT_LIMIT`]), else (or if
/// it fails) conjugate gradients from `old`. Measured on the first 8,000 mpnet words at K=256
/// D=20 (4 lsq rounds, loaded machine): the table-by-table fits conjugate gradients replaced
/// reached 0.8776 / nn@10 0.7450 with 2.1-2.5 s per fit, conjugate gradients 0.8387 / 0.7610,
/// 10 s for the first fit and 0.5 s for each later one.
fn fit_tables(set: &TrainingSet, codes: &Tensor, old: &Tensor) -> Tensor {
    let (num_codebooks, k, d) = (set.num_codebooks, set.k, set.d);
    let by_gradients = || {
        let solver = cg::CgFit {
            ridge: RIDGE,
            iterations: CG_ITERATIONS,
            tolerance: CG_TOLERANCE,
            workers: set.workers,
        };
        tch::no_grad(|| {
            solver.fit(
                &set.x,
                codes,
                Some(&set.train_mask),
                set.weights.as_ref(),
                old,
            )
        })
    };
    // Conjugate gradients run on the CPU (see `cg`); on an accelerator the dense solve stays
    // where the data is, up to its memory limit.
    let dense_limit = if set.device == tch::Device::Cpu {
        DENSE_LIMIT
    } else {
        lsq::JOINT_LIMIT
    };
    if num_codebooks * k > dense_limit {
        return by_gradients();
    }
    let parts = chunks(set.n, NormalEquations::chunk_rows(num_codebooks));
    let states: Vec<_> = (0..set.workers.min(parts.len()))
        .map(|_| {
            (
                set.x.shallow_clone(),
                codes.shallow_clone(),
                set.train_mask.shallow_clone(),
                set.weights.as_ref().map(Tensor::shallow_clone),
                NormalEquations::new(num_codebooks, k, d, set.device),
            )
        })
        .collect();
    let (states, _) = par_chunks(
        states,
        &parts,
        |(x, c, m, w, normal), s, len| {
            let (xc, cc, wc) = chunk(x, c, w.as_ref(), Some(m), s, len);
            normal.add(&xc, &cc, wc.as_ref());
        },
        |_| {},
    );
    tch::no_grad(|| {
        let mut iter = states.into_iter().map(|(_, _, _, _, n)| n);
        let mut total = iter.next().expect("at least one worker");
        for other in iter {
            total.merge(&other);
        }
        // The (DK)² Cholesky solve in f64 (K=256 D=8: 0.4 s on one core at d = 50, 0.8 s at
        // 768, every lsq round) runs alone: on all the workers' cores.
        with_torch_threads(set.workers, || total.solve(RIDGE)).unwrap_or_else(by_gradients)
    })
}

/// Positions changed by one perturbation trial of the lsq search: two (one below D = 8). Four
/// (faiss's default) made each trial about half again as costly, and more trials of two found
/// as much in less time (see [`crate::train_config::TrainConfig::lsq_trials_for`]).
fn perturbed(num_codebooks: i64) -> usize {
    (num_codebooks as usize / 4).clamp(1, 2)
}

/// The searches of one lsq round: the local search's perturbation trials per word, and the
/// width of the beam search run beside it (0: none).
#[derive(Clone, Copy)]
struct RoundSearch {
    trials: usize,
    beam: usize,
}

/// Codes for every word under `tables`, starting from `codes`: the iterated local search when
/// the pairwise terms fit in memory, else plain ICM; with `how.beam`, also a beam search from
/// scratch, each word keeping the closer codes. No word's error grows. Once `--time-limit` has
/// passed, the remaining chunks of words keep their codes (tables refit by least squares to
/// those codes fit them no worse, so a round cut short still loses nothing). Returns the codes
/// and how many words took the beam search's.
fn search(
    set: &TrainingSet,
    out: &mut Reporter,
    tables: &Tensor,
    codes: &Tensor,
    how: RoundSearch,
) -> (Tensor, usize) {
    let (seed, perturb) = (out.rng.seed(), perturbed(set.num_codebooks));
    let taken = AtomicUsize::new(0);
    let deadline = set.deadline();
    // The (DK)² products of the tables, one matrix product, on every worker's core.
    let found = match with_torch_threads(set.workers, || ils::PairTerms::new(tables)) {
        Some(terms) => set.encode_all(
            out,
            Some(codes),
            ils::memory_per_row(set.k, set.num_codebooks),
            || terms.shallow_clone(),
            |t, xc, cc| {
                let cc = cc.expect("lsq re-encodes current codes");
                if passed(deadline) {
                    return cc.copy();
                }
                let local = ils::encode(t, xc, cc, how.trials, perturb, seed);
                if how.beam == 0 {
                    return local;
                }
                let (closer, n) = ils::closer_of(t, xc, &local, &beam::encode(t, xc, how.beam));
                taken.fetch_add(n, Ordering::Relaxed);
                closer
            },
        ),
        None => set.encode_all(
            out,
            Some(codes),
            lsq::icm_memory_per_row(set.k, set.d),
            || tables.shallow_clone(),
            |t, xc, cc| {
                let cc = cc.expect("lsq re-encodes current codes");
                if passed(deadline) {
                    return cc.copy();
                }
                lsq::icm(xc, cc, t, ICM_SWEEPS)
            },
        ),
    };
    (found, taken.into_inner())
}

/// Rounds of least-squares tables and re-encoding from `(tables, codes)`; returns the best pair
/// seen by the error over all words. Plain rounds stop when a round gains less than
/// [`MIN_GAIN`]. Annealed rounds (exponent `anneal`, LSQ++'s stochastic relaxation) search
/// under tables perturbed by Gaussian noise of the spread, per dimension, of what the starting
/// codes leave unexplained, louder on wide vectors ([`anneal_noise_scale`]), divided by D and
/// scaled by `(1 - round / rounds)^anneal`, and run every round: the noise lets codes leave the
/// local optimum the residual k-means left them in.
fn rounds(
    set: &TrainingSet,
    out: &mut Reporter,
    tables: Tensor,
    codes: Tensor,
    rounds: usize,
    anneal: Option<f64>,
) -> (Tensor, Tensor) {
    let mut best = set.fit_error(&codes, &Decoder::Additive(tables.shallow_clone()));
    let (mut best_tables, mut best_codes) = (tables.shallow_clone(), codes.shallow_clone());
    // The exponent and the error's spread per dimension (louder on wide vectors), when annealing.
    let noise = anneal.map(|p| {
        let spread = tch::no_grad(|| {
            let rows = &set.train_rows;
            let fit = additive_decode(&tables, &codes.index_select(0, rows));
            (set.x.index_select(0, rows) - fit)
                .std_dim(0, true, false)
                .to_device(tch::Device::Cpu)
                * anneal_noise_scale(set.d as usize)
        });
        (p, spread)
    });
    let (mut previous, mut codes) = (tables, codes);
    // The first round runs both searches in full: the local search with its perturbation
    // trials and the beam search. Where the beam finds closer codes for at least
    // BEAM_MIN_SHARE of the words, it keeps running beside a local search without trials (it
    // explores instead, at less cost); elsewhere the rounds go on with the trials alone. The beam
    // search reads the pairwise terms: without them (D·K too large) there is none.
    let trials = set.cfg.lsq_trials_for(set.num_codebooks as usize);
    let mut how = RoundSearch {
        trials,
        beam: if ils::PairTerms::fit(set.num_codebooks, set.k) {
            set.cfg.lsq_beam_width()
        } else {
            0
        },
    };
    out.settle("lsq_trials", trials);
    out.settle("lsq_beam", how.beam);
    // The best error after each round, to judge the annealed rounds' recent gain.
    let mut bests = vec![best];
    // With --time-limit, a round starts only when one more (as long as the last) ends within
    // it; the first round runs without noise (it measures what a round costs, and may be the
    // only one), and the annealing cools to nothing by the last round that fits (`planned`).
    // The first round always starts: its least-squares refit is the cheapest large gain, and
    // its search stops at the deadline (all 400,000 GloVe words at K=256 D=8, the rq stage
    // ending at the limit: 2.7296 -> 2.6811 in 0.7 s).
    let budgeted = set.cfg.time_limit.is_some();
    let (mut round_secs, mut planned) = (0.0, rounds);
    for round in 1..=rounds {
        if round > 1 && set.no_time_for(round_secs) {
            out.progress.message(&format!(
                "lsq: time limit reached ({} rounds of about {round_secs:.1} s run)",
                round - 1
            ));
            break;
        }
        let r0 = Instant::now();
        let new_tables = fit_tables(set, &codes, &previous);
        out.begin("lsq", set.n as u64);
        let (new_codes, taken) = match &noise {
            Some((p, sd)) if !(budgeted && round == 1) => {
                let t = (1.0 - round as f64 / planned as f64).max(0.0).powf(*p);
                let s = new_tables.size();
                let z = out.rng.normal_of(&s, 1.0) * sd.view([1, 1, s[2]]) * (t / s[0] as f64);
                search(
                    set,
                    out,
                    &(&new_tables + z.to_device(set.device)),
                    &codes,
                    how,
                )
            }
            _ => search(set, out, &new_tables, &codes, how),
        };
        if round == 1 && how.beam > 0 {
            let share = taken as f64 / set.n.max(1) as f64;
            let keep = share >= BEAM_MIN_SHARE;
            out.progress.message(&format!(
                "lsq: the beam search (width {}) found closer codes than {trials} perturbation \
                 trials for {taken} words ({:.1}%); {}",
                how.beam,
                100.0 * share,
                if keep {
                    "it goes on beside the local search, without the trials"
                } else {
                    "the rounds go on with the trials alone"
                }
            ));
            how = if keep {
                RoundSearch {
                    trials: set.cfg.lsq_trials.unwrap_or(0),
                    beam: how.beam,
                }
            } else {
                RoundSearch { trials, beam: 0 }
            };
        }
        let decoder = Decoder::Additive(new_tables.shallow_clone());
        let all = set.fit_error(&new_codes, &decoder);
        let improved = all < best;
        let val_mse = set.val_mse(&new_codes, &decoder);
        out.progress
            .epoch(&set.round_record("lsq", round, all, val_mse, improved, r0));
        let gain = (best - all) / best.max(f64::MIN_POSITIVE);
        if improved {
            (best_tables, best_codes, best) =
                (new_tables.shallow_clone(), new_codes.shallow_clone(), all);
        }
        if noise.is_none() {
            if !improved || gain < MIN_GAIN {
                break;
            }
            if how.beam > 0 && gain < BEAM_MIN_GAIN {
                // The beam's rounds have stopped paying for themselves; the cheaper rounds of
                // the trials alone go on while they gain.
                out.progress.message(&format!(
                    "lsq: the beam's round gained {:.2}%, under {}%; the rounds go on with the \
                     {trials} trials alone",
                    100.0 * gain,
                    100.0 * BEAM_MIN_GAIN
                ));
                how = RoundSearch { trials, beam: 0 };
            }
        }
        round_secs = r0.elapsed().as_secs_f64();
        if let Some(fit) = set.steps_left(round_secs) {
            planned = planned.min(round + fit.max(1));
        }
        bests.push(best);
        if noise.is_some() && round < rounds && annealing_stalled(&bests) {
            out.progress.message(&format!(
                "lsq: the last {ANNEAL_WINDOW} rounds gained less than {}%; annealing ends",
                ANNEAL_MIN_GAIN * 100.0
            ));
            break;
        }
        (previous, codes) = (new_tables, new_codes);
    }
    (best_tables, best_codes)
}

/// How much louder than the unexplained spread the annealing noise is at width `d`:
/// `(d / 50)^0.2`, at least 1 and at most 2 (1.43 at d = 300, 1.72 at 768). A perturbation of the
/// tables moves a word's squared error by a cross term that, against the error itself, shrinks
/// about as `1/√d`, so at the same spread wide vectors hardly leave the local optimum of the rq
/// codes: the mpnet table (768) at K=256 D=8 stopped gaining by round 20 (3.2948 / nn@10 0.3686;
/// noise ×1.5 3.2654 / 0.3852, ×2 3.2695 / 0.3820), its 300 main directions 2.6556 / 0.3870 (×1.3
/// 2.6377 / 0.3912, ×1.6 2.6354 / 0.3992). At GloVe's 50 dimensions the spread as it is was the
/// best of ×0.5 to ×3 on the 20k head (1.3860 / 0.6674; ×1.5 1.3770 / 0.6617, ×2 1.4051).
/// At D = 20 and 32 the scale hardly matters (mpnet D=20 2.0539 -> 2.0499 at ×1.5, D=32 equal).
fn anneal_noise_scale(d: usize) -> f64 {
    (d as f64 / ANNEAL_NOISE_WIDTH)
        .powf(ANNEAL_NOISE_EXPONENT)
        .clamp(1.0, ANNEAL_NOISE_MOST)
}

/// Whether annealed rounds should end, from the best error before the first round and after
/// each (`bests`): from the tenth round on, when the last [`ANNEAL_WINDOW`] rounds lowered it
/// less than [`ANNEAL_MIN_GAIN`]. The window judges only annealing that had already beaten its
/// start: while the noise is loud the rounds' errors may stay above it (all 400,000 GloVe words
/// at K=32 D=12: the first nine), and ending then would keep the start.
fn annealing_stalled(bests: &[f64]) -> bool {
    let round = bests.len().saturating_sub(1);
    if round < 2 * ANNEAL_WINDOW {
        return false;
    }
    let (before, best) = (bests[round - ANNEAL_WINDOW], bests[round]);
    before < bests[0] && (before - best) / before.max(f64::MIN_POSITIVE) < ANNEAL_MIN_GAIN
}

/// Least-squares tables and codes by local search: annealed rounds
/// (`TrainConfig::lsq_annealed_rounds`), or plain rounds while the error over all words falls
/// when `--lsq-anneal` is 0 or the input is too large to anneal for long enough.
pub(super) fn stage_lsq(
    set: &TrainingSet,
    out: &mut Reporter,
    tables: Tensor,
    codes: Tensor,
) -> Result<(Tensor, Tensor), TrainError> {
    let cfg = set.cfg;
    let t0 = Instant::now();
    out.begin("lsq", set.n as u64);
    // Every word is compressed, so rounds are judged by the error over all words (which a round
    // cannot raise on the words it fits); the held-out error is logged to show generalisation.
    // Annealing needs every round over every word: tables annealed on a sample of 65,536 of the
    // 400,000 GloVe words fit the sample (2.39 there) and then encoded all words at 2.81, and
    // three plain rounds over all words only reached 2.72 (plain rounds alone: 2.67). So an
    // input whose rounds would cost too much (`TrainConfig::lsq_anneal_words`) anneals every
    // word over fewer rounds, or, where too few would fit, gets plain rounds, with the
    // perturbation trials, over every word.
    let (n, dd, k) = (set.n as usize, set.num_codebooks as usize, set.k as usize);
    let most = cfg.lsq_anneal_words(dd, k);
    let annealed = cfg.lsq_annealed_rounds(n, dd, k);
    let most_rounds = annealed.unwrap_or_else(|| cfg.lsq_rounds_for(n, dd, k));
    let anneal = annealed.map(|_| cfg.lsq_anneal);
    if n > most && cfg.lsq_anneal > 0.0 {
        out.progress.message(&format!(
            "lsq: {n} words, more than the {most} annealed over all their rounds at K={k} \
             D={dd} (--lsq-sample): {}",
            match annealed {
                Some(r) => format!("{r} annealed rounds, as much work as theirs"),
                None => "plain rounds, no annealing".to_string(),
            }
        ));
    }
    out.settle("lsq_sample", most);
    out.settle("lsq_rounds", most_rounds);
    let (tables, codes) = rounds(set, out, tables, codes, most_rounds, anneal);
    let decoder = Decoder::Additive(tables.shallow_clone());
    out.finish(set, "lsq", t0.elapsed().as_secs_f64(), &codes, &decoder)?;
    Ok((tables, codes))
}

/// Sets the composer so that it decodes exactly as the additive tables do: code vectors are the
/// tables (projected onto their main directions when d' differs from d), the output map their
/// inverse projection (identity when d' = d), the bias zero; the mlp's hidden output is already
/// zero. The lstm only takes the code vectors.
pub(super) fn init_from_tables(net: &ComposerNet, tables: &Tensor, rng: &mut Rng) {
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
                cb = Tensor::cat(&[cb, rng.normal_of(&[dk, e - d], 1e-3).to_device(dev)], 1);
                w = Tensor::cat(&[w, rng.normal_of(&[d, e - d], 1e-3).to_device(dev)], 1);
            }
            (cb, w)
        };
        net.codebooks
            .shallow_clone()
            .copy_(&codebooks.view([s[0], s[1], e]));
        if let Some(out) = net
            .out
            .as_ref()
            .filter(|_| net.config().kind != ComposerKind::Lstm)
        {
            out.weight.shallow_clone().copy_(&w);
            let _ = out.bias.shallow_clone().zero_();
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The noise keeps the spread at GloVe's widths and below, grows with the width, and stays
    /// within twice the spread at the widest tables people have.
    #[test]
    fn annealing_noise_is_louder_on_wide_vectors_within_a_bound() {
        for d in [1, 25, 50] {
            assert_eq!(anneal_noise_scale(d), 1.0, "d = {d}");
        }
        let widths = [100, 300, 384, 768, 1024, 4096];
        let scales: Vec<f64> = widths.iter().map(|&d| anneal_noise_scale(d)).collect();
        assert!(scales.windows(2).all(|w| w[0] <= w[1]), "{scales:?}");
        assert!((1.4..1.5).contains(&scales[1]), "300: {}", scales[1]);
        assert!((1.6..1.8).contains(&scales[3]), "768: {}", scales[3]);
        assert_eq!(scales[5], ANNEAL_NOISE_MOST);
    }

    #[test]
    fn annealing_ends_when_it_stalls_below_its_start_not_while_still_above_it() {
        // Rounds that have already beaten the start and then gain under 0.1% in five: ends.
        let mut stalled = vec![3.0, 2.9, 2.8, 2.7, 2.6, 2.5];
        stalled.extend([2.5; 5]);
        assert!(annealing_stalled(&stalled));
        // Too early to judge, however flat.
        assert!(!annealing_stalled(&stalled[..10]));
        // Still gaining: goes on.
        let gaining: Vec<f64> = (0..=12).map(|r| 3.0 - 0.05 * r as f64).collect();
        assert!(!annealing_stalled(&gaining));
        // Noisy rounds that have not yet beaten the start keep the best at the start: the window
        // sees no gain, but the annealing goes on.
        assert!(!annealing_stalled(&[3.4239; 11]));
        // Once beaten, the same flat window ends it.
        let mut beaten = vec![3.4239; 5];
        beaten.extend([3.42; 6]);
        assert!(annealing_stalled(&beaten));
    }
}
