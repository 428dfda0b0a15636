#!/usr/bin/env bash
# The student's share under multi-class pressure (docs/prototypes.md): PRD's student (MNP filter, no patch memory)
# against plain RD4AD on the four real categories alone and with six generated ones, seeds for the spread between
# equal runs, then the choices the paper leaves open. Each phase is one `python -m training ablate` (one teacher-
# feature cache per phase); its ablation.json/md land in $OUT/<phase>/. A phase is all_s<seed> (rd, prd_no_memory and,
# for seed 0, every open choice), four_s<seed> (rd, prd_no_memory on the real four alone) or NAME_s<seed>:VARIANTS
# (those variants on all the categories). Train with one thread per process (OMP_NUM_THREADS=1) on a loaded machine:
# two threads on two busy cores ran 5x slower.
#
#   docs/research/mnp_pressure.sh REAL_ROOT GEN_ROOT OUT [PHASE...]
#
# REAL_ROOT: the four real categories (the study used ../shared/data with magnetic_tile thinned by symlinks: every
# 3rd train/good image, every 2nd test image, to fit the time); GEN_ROOT: `python -m training synth GEN_ROOT
# --styles weave,brushed,dots,cells,rings,plaid --size 160 --train 80 --test-good 15 --test-defect 25`.
set -euo pipefail
real=$1 gen=$2 out=$3
shift 3
python=${PYTHON:-python}
common=(--image-size 128 --epochs 6 --memory-entries 0 --no-galleries)
choices=prd_k64,prd_k1024,prd_top1,prd_top16,prd_filter_teacher,prd_noise,prd_global_loss,prd_group_loss
run() {  # phase name, seed, variants, data roots...
  local name=$1 seed=$2 variants=$3
  shift 3
  local data=()
  for root in "$@"; do data+=(--data "$root"); done
  echo "$(date -u +%H:%M:%S) phase $name: seed $seed, $variants" >&2
  "$python" -m training ablate "${data[@]}" --out "$out/$name" --variants "$variants" --seed "$seed" "${common[@]}"
}
phases=("$@")
[ ${#phases[@]} -gt 0 ] || phases=(all_s0 all_s1 four_s0 all_s2 four_s1)
for phase in "${phases[@]}"; do
  case $phase in
    all_s0) run all_s0 0 "rd,prd_no_memory,$choices" "$real" "$gen" ;;
    all_s[0-9]) run "$phase" "${phase#all_s}" rd,prd_no_memory "$real" "$gen" ;;
    four_s[0-9]) run "$phase" "${phase#four_s}" rd,prd_no_memory "$real" ;;
    *_s[0-9]:*) name=${phase%%:*}; run "$name" "${name##*_s}" "${phase#*:}" "$real" "$gen" ;;  # NAME_sSEED:variants
    *) echo "unknown phase $phase" >&2; exit 2 ;;
  esac
done
