# Shared by the GL3D training scripts (sourced after _venv.sh): picks the data set and builds its match sets.
#   GL3D_ROOT: the GL3D root; unset -> a synthetic GL3D set built once under data_cache/synthetic_gl3d.
#   GL3D_SPLIT: list/<split> to use (default gl3d). Match sets are built once and reused (.complete markers).
ensure_gl3d() {
    SPLIT=${GL3D_SPLIT:-gl3d}
    if [ -z "${GL3D_ROOT:-}" ]; then
        GL3D_ROOT=data_cache/synthetic_gl3d
        echo "[tfmatch] GL3D_ROOT is not set: using the synthetic GL3D set in $GL3D_ROOT" >&2
        [ -f "$GL3D_ROOT/.synthetic_gl3d.complete" ] || "$VENV/bin/python" -m data_tools.make_synthetic_gl3d --out "$GL3D_ROOT"
    fi
    "$VENV/bin/python" -m data_tools.gl3d_match_sets --gl3d "$GL3D_ROOT" --split "$SPLIT"
}
