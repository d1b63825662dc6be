#!/usr/bin/env bash
# GPU check for the CUDA device tier, for a machine with an NVIDIA GPU (driver 580,
# CUDA 13, PyTorch 2.11) and no Rust toolchain: it runs binaries built elsewhere.
#
# Build them on a development machine, from the repository root:
#   CARGO_TARGET_DIR=target cargo build --release --bin strata
#   CARGO_TARGET_DIR=target cargo test --release --no-run --test cuda
#     (prints "Executable tests/cuda.rs (target/release/deps/cuda-<hash>)")
#   mkdir -p gpu-bin && cp target/release/strata gpu-bin/ && cp target/release/deps/cuda-<hash> gpu-bin/cuda-tests
# then carry gpu-bin/ to the GPU machine and run:  bash benches/gpu_check.sh [gpu-bin]
#
# cudarc (cuda-13000 bindings, dynamic loading) opens libcuda.so.1 from the driver and
# libnvrtc.so / libnvrtc.so.13 (or .so.12); NVRTC comes from PyTorch's nvidia wheels,
# whose folder is added to LD_LIBRARY_PATH below. Takes well under 3 minutes.
set -euo pipefail
bin=${1:-gpu-bin}
[[ -x $bin/strata && -x $bin/cuda-tests ]] || { echo "need $bin/strata and $bin/cuda-tests (see the top of $0)" >&2; exit 1; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
nvrtc_dir=$(${PYTHON:-python3} - <<'PY' 2>/dev/null || true
import glob, os, site
roots = site.getsitepackages() + [site.getusersitepackages(), "/usr/local/cuda/lib64"]
hits = sorted(h for r in roots for h in glob.glob(os.path.join(r, "**", "libnvrtc.so*"), recursive=True)
              if "builtins" not in h)
print(os.path.dirname(hits[-1]) if hits else "")
PY
)
if [[ -n $nvrtc_dir ]]; then
    echo "NVRTC from $nvrtc_dir: $(cd "$nvrtc_dir" && ls libnvrtc.so* | tr '\n' ' ')"
    export LD_LIBRARY_PATH=$nvrtc_dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
else
    echo "no libnvrtc found next to PyTorch; relying on the system library path"
fi
echo "== CUDA tier tests (bit-for-bit against the CPU)"
timeout 100 "$bin/cuda-tests" --test-threads 1 --nocapture
echo "== strata bench gather --backend cuda"
timeout 60 "$bin/strata" bench gather --backend cuda
