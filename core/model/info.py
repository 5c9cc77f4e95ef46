"""``model-info``: what the hand model in use is and how big its hands are."""

from __future__ import annotations

from typing import Any

import torch

from core.model.data import load_model_data
from core.model.layer import HandModel


def model_info(model: str | None = None, side: str = "right", sweep_components: int = 3) -> dict[str, Any]:
    """Counts, licence, and hand length/width (mm) at the mean shape and at +-2 SD.

    Returns:
        a JSON-ready dict with keys name, license, side, source, sha256, vertices, faces,
        joints, shape_components, hand_length_mm, hand_width_mm, uv, and ``shape_sweep``: a
        list of {component, sd, hand_length_mm, hand_width_mm} for the first components.
    """
    data = load_model_data(model, side)  # type: ignore[arg-type]
    layer = HandModel(data)
    rows = []
    betas = [torch.zeros(1, data.num_betas)]
    for k in range(min(sweep_components, data.num_betas)):
        for sd in (-2.0, 2.0):
            b = torch.zeros(1, data.num_betas)
            b[0, k] = sd
            betas.append(b)
            rows.append({"component": k + 1, "sd": sd})
    with torch.no_grad():
        length, width = layer.measures(torch.cat(betas))
    for row, l_m, w_m in zip(rows, length[1:].tolist(), width[1:].tolist()):
        row.update(hand_length_mm=round(l_m * 1000, 1), hand_width_mm=round(w_m * 1000, 1))
    return {
        "name": data.name,
        "license": data.license,
        "side": data.side,
        "source": data.source,
        "sha256": data.sha256,
        "vertices": data.num_vertices,
        "faces": data.num_faces,
        "joints": int(data.j_regressor.shape[0]),
        "keypoints": 21,
        "shape_components": data.num_betas,
        "uv": data.uv is not None,
        "hand_length_mm": round(float(length[0]) * 1000, 1),
        "hand_width_mm": round(float(width[0]) * 1000, 1),
        "shape_sweep": rows,
    }


def format_model_info(info: dict[str, Any]) -> str:
    """A human-readable table of :func:`model_info`."""
    lines = [
        f"model      {info['name']} ({info['side']} hand)",
        f"licence    {info['license']}",
        f"file       {info['source']}",
        f"sha256     {info['sha256'][:16]}...",
        f"mesh       {info['vertices']} vertices, {info['faces']} faces, {info['joints']} joints, "
        f"{info['keypoints']} keypoints, UVs: {'yes' if info['uv'] else 'no'}",
        f"shape      {info['shape_components']} components",
        f"mean hand  length {info['hand_length_mm']:.1f} mm, width {info['hand_width_mm']:.1f} mm",
        "",
        "component   -2 SD length/width     +2 SD length/width   (mm)",
    ]
    by_comp: dict[int, dict[float, dict[str, Any]]] = {}
    for row in info["shape_sweep"]:
        by_comp.setdefault(row["component"], {})[row["sd"]] = row
    for comp, pair in by_comp.items():
        lo, hi = pair[-2.0], pair[2.0]
        lines.append(
            f"beta {comp:<6} {lo['hand_length_mm']:7.1f} / {lo['hand_width_mm']:5.1f}      "
            f"{hi['hand_length_mm']:7.1f} / {hi['hand_width_mm']:5.1f}"
        )
    return "\n".join(lines)
