#!/usr/bin/env bash
# On a CUDA machine (the project's GPU runner): core tests with CUDA enabled, then one CLI fit
# per mesh with extraction and evaluation. Meshes are read from .gpu/meshes (git-ignored; copy
# them from ../shared/meshes before carrying). Writes logs and JSON under ${OUT:-out/gpu}.
set -uo pipefail
out="${OUT:-out/gpu}"
mkdir -p "$out"
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")'
# The core's tests (blender_tests/core mirrors neural_field_addon/core); the add-on's need bpy.
python3 -m pytest blender_tests/core -m "not blender" -q -p no:cacheprovider ${PYTEST_ARGS:-} 2>&1 | tail -25 | tee "$out/pytest.log"
for mesh in ${MESHES:-.gpu/meshes/suzanne.npz .gpu/meshes/spot.obj}; do
  name="$(basename "${mesh%.*}")"
  /usr/bin/time -f "%e s wall" python3 -m neural_field_addon.core fit "$mesh" -o "$out/$name.nfield" \
    --device cuda --steps "${STEPS:-3000}" --json > "$out/$name.fit.json"
  python3 -m neural_field_addon.core extract "$out/$name.nfield" -o "$out/$name.ply" --resolution 256 --device cuda --json > "$out/$name.extract.json"
  python3 -m neural_field_addon.core eval "$mesh" "$out/$name.ply" --json > "$out/$name.eval.json"
  echo "$name: $(tail -1 "$out/$name.fit.json" | cut -c1-400)"
  echo "$name: $(tail -1 "$out/$name.extract.json")"
  echo "$name: $(tail -1 "$out/$name.eval.json" | cut -c1-300)"
done
