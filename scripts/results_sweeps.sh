#!/bin/bash
# Every sweep behind the tables of docs/RESULTS.md sections 2-4, in one place.
#
#   bash scripts/results_sweeps.sh /tmp/res [SECTION ...]   # SECTION: parity p_sweep latent latent_m5 mfeat mnist_views
#   (also, not in the default list: latent_tau latent_m5_tau mfeat_tau mnist_views_tau, the
#   beta sweeps again at the paper's tau = 0.01 (beta = 0, 1, 0.1, 0.5) with 5 seeds;
#   trifeature_m3, OVA-IB against CoMM, Symile and ConFu on ovaib_trifeature, 5 seeds; trifeature_m3_rest, GRAM, TRIANGLE,
#   pairwise CLIP, anchor CLIP and the span + product score there; trifeature_colour, the
#   colour-bit retrieval of every trifeature run already there; trifeature_m3_ova_comm, the
#   span + product score plus CoMM's self-contrast; moonshot_retention, both candidates on
#   ovaib_latent and uci_mfeat at tau = 0.01; trifeature_m3_heads, trifeature_m3_heads_no_comm
#   and moonshot_retention_heads, the same for OVA-IB on separate heads; trifeature_m3_branches,
#   the heads on separate encoders (trifeature_m3_heads_wide: on one encoder as large;
#   moonshot_retention_branches: their retrieval on ovaib_latent, uci_mfeat;
#   moonshot_retention_more: five more seeds of both retention comparisons); symile_stable,
#   Symile's rows of sections 3 and 4 at its stable default (symile_stable_parity: of
#   section 2 and mnist_views); trifeature_m4 and
#   trifeature_m5, the projection score, Symile and CoMM at M = 4 and 5; trifeature_m45_rest,
#   the other candidates there (trifeature_m4_confu, trifeature_m5_confu, and likewise
#   _span_product and _heads: one of them at one M); trifeature_m4_branches and trifeature_m5_branches, the
#   fourth candidate there; branches_score_weight, its score weight chosen on training
#   data; trifeature_m3_d16, OVA-IB at the heads' span width; trifeature_m3_learned_weight
#   and learned_weight_retention, the span + product score with its weight learned in training)
#   python scripts/results_tables.py --root /tmp/res --json docs/results/tables.json
#   (add --archive docs/results/tables_trifeature.json, or any tables*.json there, to keep
#   the published seeds of rows whose run directories are gone: results_tables.py's docstring)
#
# Re-running skips finished runs (their results.json exists) and resumes interrupted ones.
# Same seeds give the same numbers on the same machine. On the 2-core machine of
# docs/RESULTS.md the sections were run as 3 to 5 concurrent streams (about 4 hours in all).
set -euo pipefail
ROOT=${1:?usage: bash scripts/results_sweeps.sh ROOT [SECTION ...]}
shift
case $ROOT in
*[[:space:]]*)
  echo "results_sweeps.sh: ROOT '$ROOT' holds a space; the sweep commands split their" \
    "arguments on spaces: use a directory without one." >&2
  exit 2 ;;
esac
SECTIONS=${*:-parity p_sweep latent latent_m5 mfeat mnist_views}

# Every python runs through run(): in the background with this shell waiting on it, so
# that a TERM or INT sent to this script (kill PID, not only Ctrl-C to the whole group)
# stops the python it is running too, instead of leaving it to finish on its own (bash
# runs a trap only once its foreground command has returned; `wait` returns at once).
# The trap signals every background job of this shell (`jobs -p`: a job is listed from
# the moment it starts, before `$!` could be read). (A shell started with INT ignored, as
# anything run in the background of a non-interactive shell is, cannot trap INT: TERM.)
# With CHECK set, run() does nothing: the sections are first walked that way, so that an
# unknown section stops the script before any sweep runs.
run() {
  [ -z "${CHECK:-}" ] || return 0
  "$@" &
  wait $!
}
trap 'kill -TERM $(jobs -p) 2>/dev/null || true; wait; exit 143' TERM INT

# The published runs were trained before epoch-aligned batches (2026-12-02): this order
# reproduces them, and a rerun over their ROOT skips or resumes them.
ORDER="--config.dataset.epoch_aligned=False"
S="run python -m ovaib_jax.sweep --seeds=42,0,1 $ORDER"
S5="run python -m ovaib_jax.sweep --seeds=42,0,1,2,3 $ORDER"
T001="--config.objective.tau=0.01"
# Parity and latent: the probes and retrieval only (the subset table is for mfeat).
F="--config.final_evaluators=downstream,retrieval"
ALL=ova_ib,symile,gram,triangle,pairwise_clip,pairwise_clip_ib,anchor_clip

# Evaluates every finished run matching a glob again from its last checkpoint, with the
# given evaluate --set flags; writes eval/results.json (runs that have one are skipped).
evaluate_again() {
  local pattern=$1
  shift
  for dir in $pattern; do
    [ -f "$dir/results.json" ] && [ ! -f "$dir/eval/results.json" ] || continue
    run python -m ovaib_jax.evaluate --workdir="$dir" --set=evaluators= "$@" > /dev/null
  done
}

# The latent probes again on each modality's embedding z (what the minimality term acts on).
embedding_probes() {
  evaluate_again "$ROOT/latent_*/*/seed_*" --set=final_evaluators=downstream \
    --set=evaluator_kwargs.downstream.features=embedding
}

# The trifeature retrieval again with the colour bit joined to the shape (a candidate view
# is relevant when it has the query's shape and the colour bit the query's views imply):
# the higher-order test shape-only relevance cannot make.
colour_retrieval() {
  evaluate_again "$ROOT/trifeature_*/*/seed_*" --set=final_evaluators=retrieval \
    --set=evaluator_kwargs.retrieval.candidate_targets=color_bits
}

sweep_section() {  # the sweeps of section $section
  case $section in
  parity)  # p = 1, M = 3, 4, 5: every objective; OVA-IB at beta = 1, + MLP / product
    # projector, + the span + product score (product_weight = 1)
    for M in 3 4 5; do
      P="--config=experiments/parity.py:M=$M"
      # TRIANGLE is defined for M = 3 only.
      [ $M = 3 ] && OBJ=$ALL || OBJ=${ALL/triangle,/}
      $S $P --workdir=$ROOT/parity_m$M $F --objectives=$OBJ
      $S $P --workdir=$ROOT/parity_m${M}_beta1 $F --objectives=ova_ib --config.objective.beta=1.0
      $S $P --workdir=$ROOT/parity_m${M}_mlp $F --objectives=ova_ib --config.objective.projector=mlp
      $S $P --workdir=$ROOT/parity_m${M}_product $F --objectives=ova_ib \
        --config.objective.projector=product
      $S $P --workdir=$ROOT/parity_m${M}_span_product $F --objectives=ova_ib \
        --config.objective.product_weight=1.0
    done ;;
  p_sweep)  # M = 3, the last modality is the parity with probability p, else a copy of x0
    for p in 0.9 0.75 0.5; do
      $S --config=experiments/parity.py:p=$p --workdir=$ROOT/parity_m3_p$p $F --objectives=$ALL
    done ;;
  latent)  # OVA-IB's beta sweep, its projector variants at beta = 1, the other objectives
    for b in 0 0.1 0.5 1 2; do
      $S --config=experiments/latent.py:beta=$b --workdir=$ROOT/latent_beta$b $F --objectives=ova_ib
    done
    $S --config=experiments/latent.py:beta=1 --workdir=$ROOT/latent_mlp $F --objectives=ova_ib \
      --config.objective.projector=mlp
    $S --config=experiments/latent.py:beta=1 --workdir=$ROOT/latent_product $F --objectives=ova_ib \
      --config.objective.projector=product
    $S --config=experiments/latent.py:beta=1 --workdir=$ROOT/latent_span_product $F \
      --objectives=ova_ib --config.objective.product_weight=1.0
    $S --config=experiments/latent.py:beta=1 --workdir=$ROOT/latent_span_product_w0.3 $F \
      --objectives=ova_ib --config.objective.product_weight=0.3
    $S --config=experiments/latent.py --workdir=$ROOT/latent_others $F \
      --objectives=${ALL#ova_ib,}
    embedding_probes ;;
  latent_m5)  # does beta help more as M grows? The beta sweep again at M = 5
    for b in 0 0.1 0.5 1 2; do
      $S --config=experiments/latent.py:M=5,beta=$b --workdir=$ROOT/latent_m5_beta$b $F \
        --objectives=ova_ib
    done
    $S --config=experiments/latent.py:M=5 --workdir=$ROOT/latent_m5_others $F \
      --objectives=symile,pairwise_clip
    $S --config=experiments/latent.py:M=5,beta=1 --workdir=$ROOT/latent_m5_product $F \
      --objectives=ova_ib --config.objective.projector=product
    $S --config=experiments/latent.py:M=5,beta=1 --workdir=$ROOT/latent_m5_span_product $F \
      --objectives=ova_ib --config.objective.product_weight=1.0
    embedding_probes ;;
  mfeat)  # all four final evaluators, the 63-subset table included (TRIANGLE: M = 3 only)
    $S --config=experiments/mfeat.py --workdir=$ROOT/mfeat --objectives=${ALL/triangle,/}
    $S --config=experiments/mfeat.py --workdir=$ROOT/mfeat_beta1 --objectives=ova_ib \
      --config.objective.beta=1.0
    $S --config=experiments/mfeat.py --workdir=$ROOT/mfeat_mlp --objectives=ova_ib \
      --config.objective.projector=mlp
    $S --config=experiments/mfeat.py --workdir=$ROOT/mfeat_product --objectives=ova_ib \
      --config.objective.projector=product
    $S --config=experiments/mfeat.py --workdir=$ROOT/mfeat_span_product --objectives=ova_ib \
      --config.objective.product_weight=1.0 ;;
  mnist_views)  # as mfeat (TRIANGLE: M = 3, but mnist_views has 3 views: run it too)
    $S --config=experiments/mnist_views.py --workdir=$ROOT/mnist_views --objectives=$ALL
    $S --config=experiments/mnist_views.py --workdir=$ROOT/mnist_views_beta1 --objectives=ova_ib \
      --config.objective.beta=1.0
    $S --config=experiments/mnist_views.py --workdir=$ROOT/mnist_views_mlp --objectives=ova_ib \
      --config.objective.projector=mlp
    $S --config=experiments/mnist_views.py --workdir=$ROOT/mnist_views_span_product \
      --objectives=ova_ib --config.objective.product_weight=1.0 ;;
  # The beta sweeps again at the paper's temperature tau = 0.01 (issue 13 section 2: the
  # sufficiency gradient scales with 1/tau, the minimality term's does not, so beta = 1 at
  # tau = 0.1 weighs minimality 10x more than the paper's beta = 1). beta = 0 against the
  # paper's beta = 1, 5 seeds, paired by seed; probes and retrieval only.
  latent_tau)
    for b in 0 1 0.1 0.5; do
      $S5 --config=experiments/latent.py:beta=$b --workdir=$ROOT/latent_tau0.01_beta$b $F \
        --objectives=ova_ib $T001
    done
    embedding_probes ;;
  latent_m5_tau)
    for b in 0 1 0.1 0.5; do
      $S5 --config=experiments/latent.py:M=5,beta=$b --workdir=$ROOT/latent_m5_tau0.01_beta$b \
        $F --objectives=ova_ib $T001
    done
    embedding_probes ;;
  mfeat_tau)
    for b in 0 1 0.1 0.5; do
      $S5 --config=experiments/mfeat.py --workdir=$ROOT/mfeat_tau0.01_beta$b $F \
        --objectives=ova_ib $T001 --config.objective.beta=$b
    done ;;
  mnist_views_tau)
    for b in 0 1 0.1 0.5; do
      $S5 --config=experiments/mnist_views.py --workdir=$ROOT/mnist_views_tau0.01_beta$b $F \
        --objectives=ova_ib $T001 --config.objective.beta=$b
    done ;;
  trifeature_m3)  # issue 13 section 4: R, U, S together; OVA-IB (beta = 0: its beta = 1 at
    # tau = 0.1 sits at log N on this data) against CoMM, the published best on Trifeature.
    # Held-out loss every 300 steps, so the last fifth (steps 1200-1500) shows convergence.
    $S5 --config=experiments/trifeature.py:M=3,beta=0 --workdir=$ROOT/trifeature_m3 \
      --objectives=ova_ib,comm --config.eval_every_steps=300
    for o in symile confu; do
      $S5 --config=experiments/trifeature.py:M=3 --workdir=$ROOT/trifeature_m3_$o \
        --objectives=$o --config.eval_every_steps=300
    done
    colour_retrieval ;;
  trifeature_m3_rest)  # the other baselines on the same data and budget, then the span +
    # product score (product_weight = 1, beta = 0): a first candidate for section 6.
    $S5 --config=experiments/trifeature.py:M=3 --workdir=$ROOT/trifeature_m3_baselines \
      --objectives=gram,triangle,pairwise_clip,anchor_clip --config.eval_every_steps=300
    $S5 --config=experiments/trifeature.py:M=3,beta=0 --workdir=$ROOT/trifeature_m3_span_product \
      --objectives=ova_ib --config.objective.product_weight=1.0 --config.eval_every_steps=300
    colour_retrieval ;;
  trifeature_colour) colour_retrieval ;;  # for trifeature runs made before it was added
  trifeature_m3_ova_comm)  # section 6's second candidate: the span + product score plus
    # CoMM's self-contrast (the term that rewards a view's unique factors, THEORY section 6)
    $S5 --config=experiments/trifeature.py:M=3,beta=0,objective=ova_ib_comm \
      --workdir=$ROOT/trifeature_m3_ova_comm --objectives=ova_ib_comm \
      --config.objective.product_weight=1.0 --config.eval_every_steps=300
    colour_retrieval ;;
  moonshot_retention)  # section 6's other half: the candidates' retrieval on ovaib_latent
    # M = 3 and uci_mfeat against the projection's (latent_tau / mfeat_tau, beta = 0)
    for c in "span_product ova_ib" "ova_comm ova_ib_comm"; do
      set -- $c
      $S5 --config=experiments/latent.py:beta=0 --workdir=$ROOT/latent_tau0.01_$1 $F \
        --objectives=$2 $T001 --config.objective.beta=0 --config.objective.product_weight=1.0
      $S5 --config=experiments/mfeat.py --workdir=$ROOT/mfeat_tau0.01_$1 $F \
        --objectives=$2 $T001 --config.objective.beta=0 --config.objective.product_weight=1.0
    done ;;
  trifeature_m3_learned_weight)  # section 6's first candidate with its weight learned in
    # training (w = exp of a model parameter, from 1) instead of fixed at 1
    $S5 --config=experiments/trifeature.py:M=3,beta=0 \
      --workdir=$ROOT/trifeature_m3_span_product_learned --objectives=ova_ib \
      --config.objective.product_weight=1.0 --config.model.learnable_product_weight=True \
      --config.eval_every_steps=300
    colour_retrieval ;;
  learned_weight_retention)  # ... and its retrieval on ovaib_latent M = 3 and uci_mfeat
    LW="--config.objective.product_weight=1.0 --config.model.learnable_product_weight=True"
    $S5 --config=experiments/latent.py:beta=0 --workdir=$ROOT/latent_tau0.01_span_product_learned \
      $F --objectives=ova_ib $T001 --config.objective.beta=0 $LW
    $S5 --config=experiments/mfeat.py --workdir=$ROOT/mfeat_tau0.01_span_product_learned $F \
      --objectives=ova_ib $T001 --config.objective.beta=0 $LW ;;
  trifeature_m3_heads)  # section 6's third candidate: OVA-IB on separate heads of one
    # embedding (span, product and self-contrast heads, each with its own term)
    $S5 --config=experiments/trifeature.py:M=3,beta=0,objective=ova_ib_heads \
      --workdir=$ROOT/trifeature_m3_heads --objectives=ova_ib_heads --config.eval_every_steps=300
    colour_retrieval ;;
  trifeature_m3_heads_no_comm)  # the same without the self-contrast head: span and
    # product heads only (does separating them keep the shape that span + product lost?)
    $S5 --config=experiments/trifeature.py:M=3,beta=0,objective=ova_ib_heads \
      --workdir=$ROOT/trifeature_m3_heads_no_comm --objectives=ova_ib_heads \
      --config.objective.comm_share=0.0 --config.eval_every_steps=300
    colour_retrieval ;;
  trifeature_m3_branches)  # section 6's fourth candidate: the three heads of
    # trifeature_m3_heads, each on its own encoder (model.branches: 3 encoders per view)
    $S5 --config=experiments/trifeature.py:M=3,beta=0,objective=ova_ib_heads \
      --workdir=$ROOT/trifeature_m3_branches --objectives=ova_ib_heads \
      --config.model.branches=16,8,8 --config.eval_every_steps=300
    colour_retrieval ;;
  trifeature_m3_heads_wide)  # the capacity control of trifeature_m3_branches: the
    # heads on one shared encoder as wide as the three (192-d representation, CNN 32-64,
    # 168k parameters against the branches' 163k)
    $S5 --config=experiments/trifeature.py:M=3,beta=0,objective=ova_ib_heads \
      --workdir=$ROOT/trifeature_m3_heads_wide --objectives=ova_ib_heads \
      --config.model.representation_dim=192 --config.model.small_cnn.features="(32,64)" \
      --config.model.head_hidden=64 --config.eval_every_steps=300
    colour_retrieval ;;
  trifeature_m3_d16)  # the control of the heads' span head: OVA-IB alone on a 16-d
    # embedding (the span head's width at d = 32), is its lower retrieval the width's?
    $S5 --config=experiments/trifeature.py:M=3,beta=0 --workdir=$ROOT/trifeature_m3_d16 \
      --objectives=ova_ib --config.model.embedding_dim=16 --config.eval_every_steps=300
    colour_retrieval ;;
  moonshot_retention_heads)  # the third candidate's retrieval on ovaib_latent M = 3 and
    # uci_mfeat against the projection's (as moonshot_retention)
    $S5 --config=experiments/latent.py:beta=0 --workdir=$ROOT/latent_tau0.01_heads $F \
      --objectives=ova_ib_heads $T001 --config.objective.beta=0
    $S5 --config=experiments/mfeat.py --workdir=$ROOT/mfeat_tau0.01_heads $F \
      --objectives=ova_ib_heads $T001 --config.objective.beta=0 ;;
  moonshot_retention_branches)  # the fourth candidate's (the heads on separate encoders)
    $S5 --config=experiments/latent.py:beta=0 --workdir=$ROOT/latent_tau0.01_branches $F \
      --objectives=ova_ib_heads $T001 --config.objective.beta=0 --config.model.branches=16,8,8
    $S5 --config=experiments/mfeat.py --workdir=$ROOT/mfeat_tau0.01_branches $F \
      --objectives=ova_ib_heads $T001 --config.objective.beta=0 --config.model.branches=16,8,8 ;;
  moonshot_retention_more)  # five more seeds (4-8) of moonshot_retention_branches and of
    # the projection rows it is compared with (latent_tau, mfeat_tau at beta = 0)
    # The seeds of the first five with them: a sweep reports the seeds it is given, and
    # the published reports of these workdirs hold all ten (finished runs are skipped).
    S5B="run python -m ovaib_jax.sweep --seeds=42,0,1,2,3,4,5,6,7,8 $ORDER"
    for D in latent mfeat; do
      [ $D = latent ] && C=experiments/latent.py:beta=0 || C=experiments/mfeat.py
      $S5B --config=$C --workdir=$ROOT/${D}_tau0.01_beta0 $F --objectives=ova_ib $T001 \
        --config.objective.beta=0
      $S5B --config=$C --workdir=$ROOT/${D}_tau0.01_branches $F --objectives=ova_ib_heads \
        $T001 --config.objective.beta=0 --config.model.branches=16,8,8
    done ;;
  symile_stable)  # Symile at its stable default (normalised, learnable logit scale): the
    # runs of sections 3 and 4 were made with the previous one (unnormalised, scale 1)
    $S --config=experiments/latent.py:M=5 --workdir=$ROOT/latent_m5_symile_stable $F \
      --objectives=symile
    $S --config=experiments/latent.py --workdir=$ROOT/latent_symile_stable $F --objectives=symile
    $S --config=experiments/mfeat.py --workdir=$ROOT/mfeat_symile_stable --objectives=symile ;;
  symile_stable_parity)  # the same for the parity rows of section 2 and mnist_views
    for M in 5 4 3; do
      $S --config=experiments/parity.py:M=$M --workdir=$ROOT/parity_m${M}_symile_stable $F \
        --objectives=symile
    done
    $S --config=experiments/mnist_views.py --workdir=$ROOT/mnist_views_symile_stable \
      --objectives=symile ;;
  trifeature_m4 | trifeature_m5)  # M = 4 and 5: one objective of each family of M = 3
    # (the projection score, Symile, CoMM), 5 seeds (build the data first:
    # python -m ovaib_jax.data.build ovaib_trifeature --config=m4, likewise m5)
    M=${section#trifeature_m}
    $S5 --config=experiments/trifeature.py:M=$M,beta=0 --workdir=$ROOT/trifeature_m$M \
      --objectives=ova_ib,symile,comm --config.eval_every_steps=300
    colour_retrieval ;;
  trifeature_m45_rest)  # M = 4 and 5: the span + product score, ConFu and the separate
    # heads (each also a section of its own, below)
    run bash "$0" "$ROOT" trifeature_m4_span_product trifeature_m4_confu trifeature_m4_heads \
      trifeature_m5_span_product trifeature_m5_confu trifeature_m5_heads ;;
  trifeature_m[45]_span_product)  # the span + product score (w = 1) at M = 4 or 5
    M=${section:12:1}
    $S5 --config=experiments/trifeature.py:M=$M,beta=0 \
      --workdir=$ROOT/trifeature_m${M}_span_product --objectives=ova_ib \
      --config.objective.product_weight=1.0 --config.eval_every_steps=300
    colour_retrieval ;;
  trifeature_m[45]_confu)  # ConFu at M = 4 or 5
    M=${section:12:1}
    $S5 --config=experiments/trifeature.py:M=$M --workdir=$ROOT/trifeature_m${M}_confu \
      --objectives=confu --config.eval_every_steps=300
    colour_retrieval ;;
  trifeature_m[45]_heads)  # the separate heads on one encoder at M = 4 or 5
    M=${section:12:1}
    $S5 --config=experiments/trifeature.py:M=$M,beta=0,objective=ova_ib_heads \
      --workdir=$ROOT/trifeature_m${M}_heads --objectives=ova_ib_heads \
      --config.eval_every_steps=300
    colour_retrieval ;;
  trifeature_m4_branches | trifeature_m5_branches)  # the fourth candidate (the heads on
    # separate encoders, as trifeature_m3_branches) at M = 4 and 5
    M=${section#trifeature_m}
    M=${M%_branches}
    $S5 --config=experiments/trifeature.py:M=$M,beta=0,objective=ova_ib_heads \
      --workdir=$ROOT/trifeature_m${M}_branches --objectives=ova_ib_heads \
      --config.model.branches=16,8,8 --config.eval_every_steps=300
    colour_retrieval ;;
  branches_score_weight)  # the separate encoders' score weight chosen on training data
    # (scripts/score_weight.py), for every finished trifeature_m*_branches run
    [ -n "${CHECK:-}" ] && return 0
    shopt -s nullglob
    runs=("$ROOT"/trifeature_m*_branches/*/seed_*)
    shopt -u nullglob
    if [ "${#runs[@]}" -eq 0 ]; then
      echo "results_sweeps.sh: no $ROOT/trifeature_m*_branches/*/seed_* runs: run the" \
        "sections trifeature_m3_branches, trifeature_m4_branches, trifeature_m5_branches first." >&2
      exit 1
    fi
    run python scripts/score_weight.py "${runs[@]}" ;;
  *) echo "results_sweeps.sh: unknown section $section (the sections are the case" \
       "patterns of this script)" >&2; exit 2 ;;
  esac
}

CHECK=1
for section in $SECTIONS; do sweep_section; done  # every name known, before any sweep runs
CHECK=
for section in $SECTIONS; do sweep_section; done
