#!/usr/bin/env bash
# One check of textgym's GPU paths on one NVIDIA GPU, within 8 minutes, printing ONE table:
#   1. the CUDA-marked tests (tests/test_cuda.py: rollout vs no-cache forward, bf16, trainers);
#   2. rollout vs model.generate for SmolLM2-135M in bf16 at B=64 and B=256 (goal: 3x at 256);
#   3. one PPO and one GRPO iteration (SmolLM2-135M, bf16 autocast): seconds, tok/s and the
#      fraction of the measured bf16 matmul limit;
#   4. peak GPU memory of each benchmark.
# Needs the package installed with a CUDA build of torch (`make install` where pip's torch has
# CUDA) and SmolLM2 available offline. Usage: bash benchmarks/gpu_check.sh [PYTHON]
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${1:-${PYTHON:-python}}
LOG=${OUT:-$(mktemp -d)}
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false

if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: torch.cuda.is_available() is False with $PY; nothing to check" >&2
    exit 2
fi
"$PY" -c "import torch; print('gpu:', torch.cuda.get_device_name(0), '| torch', torch.__version__)"

timeout 150 "$PY" -m pytest -q -p no:cacheprovider -m cuda tests/test_cuda.py 2>&1 | tee "$LOG/tests.txt"
tests=$(tail -n 1 "$LOG/tests.txt")

timeout 180 "$PY" benchmarks/rollout_vs_generate.py --models smollm2-135m --batch 64,256 \
    --dtype bfloat16 --device cuda --repeats 3 2>&1 | tee "$LOG/rollout.txt"

timeout 150 "$PY" benchmarks/iteration_profile.py --algos ppo,grpo --model smollm2-135m \
    --batch 64 --group 4 --new-tokens 64 --steps 2 --device cuda 2>&1 | tee "$LOG/iteration.txt"

echo
echo "| check | setting | result |"
echo "| --- | --- | --- |"
echo "| CUDA tests | tests/test_cuda.py | ${tests:-did not run} |"
awk '$1 == "smollm2-135m" { printf "| rollout vs generate | bf16 B=%s, %s tokens | generate %s tok/s, ours %s tok/s, %s, peak %s GiB |\n", $2, $3, $5, $7, $8, $9 }' "$LOG/rollout.txt"
awk '$1 == "ppo" || $1 == "grpo" { printf "| %s iteration | B=64, 64 tokens, bf16 autocast | %s s/iter (decode %s, reward %s, ref %s, update %s), %s tok/s, %s of bf16 matmul limit, peak %s GiB |\n", $1, $6, $2, $3, $4, $5, $7, $8, $9 }' "$LOG/iteration.txt"
