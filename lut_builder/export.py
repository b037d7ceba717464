"""LUT exporters. Every export carries the fingerprint of the measurements it came from, and the
stored network calibration (the newest version), so a consumer predicts what `LatencyModel` does.

- proxyless-yaml: `{key: {count, mean, var}}` in ms, the format ProxylessNAS's LatencyEstimator reads
  (it reads `mean` as the latency and sums it over a network's layers). The calibration is *folded
  in*, because that consumer reads nothing else: every `mean` is `scale · median` (plus the weight
  term, `per_weight_byte_ms · metric_weight_bytes`, where the calibration has one), and the offset is
  added to the one key every network of the space has exactly once (the `Logits` key), so the
  estimator's sum equals our calibrated prediction `scale · Σ + offset`. `var` is scaled by scale².
  The sidecar says `calibration.folded: true` and the key that holds the offset. `--raw` writes
  the plain medians instead (then the sidecar holds the calibration, `folded: false`).
- csv: one row per entry (`latency_ms` as LatencyModel reads it, uncalibrated) + the same sidecar;
  the consumer applies the sidecar's `calibration` (`scale · Σ latency_ms + per_weight_byte_ms ·
  Σ metric_weight_bytes + offset_ms`) itself.
- parquet: one row per entry (as csv), the fingerprint and calibration in the file's
  key-value metadata (`hil.fingerprint`).

The fingerprint goes to a `.fingerprint.json` sidecar so the YAML and CSV stay readable by others.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from hil.errors import ConfigError
from hil.files import atomic_write


def _sidecar(path: Path, meta: dict[str, Any]) -> str:
    side = path.with_name(path.name + ".fingerprint.json")
    side.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return str(side)


def offset_key(keys: list[str]) -> str | None:
    """The key that carries the calibration's offset in a folded table: the only `Logits` entry
    (every network of the ProxylessNAS space ends with it once), or None when there is no such key."""
    logits = [k for k in keys if k.startswith("Logits")]
    return logits[0] if len(logits) == 1 else None


def fold_calibration(rows: list[dict[str, Any]], calibration: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """proxyless-yaml entries with `scale · median` and the offset on the Logits key."""
    key = offset_key([r["key"] for r in rows])
    if key is None:
        raise ConfigError("cannot fold the calibration into proxyless-yaml: the LUT has no single Logits key that "
                          "every network holds once; export with --raw (the sidecar then carries the calibration)")
    scale, offset = float(calibration["scale"]), float(calibration["offset_ms"])
    beta = float(calibration.get("per_weight_byte_ms", 0.0))
    table = {r["key"]: {"count": r["n"], "mean": scale * r["latency_ms"] + beta * r.get("metric_weight_bytes", 0.0)
                        + (offset if r["key"] == key else 0.0),
                        "var": (scale * r["std_ms"]) ** 2} for r in rows}
    return table, key


def export_lut(rows: list[dict[str, Any]], meta: dict[str, Any], fmt: str, output: str,
               calibration: dict[str, Any] | None = None, fold: bool = True) -> tuple[list[str], str]:
    """Write the table; returns the files written and a note on what was done with the calibration."""
    path = Path(output)
    if not path.parent.exists():
        raise ConfigError(f"{output}: folder {path.parent} does not exist")
    if path.is_dir():
        raise ConfigError(f"{output}: is a directory; name the file to write (e.g. {path / 'lut.yaml'})")
    cal = dict(calibration) if calibration else None
    note = "" if cal else "no calibration stored: plain block medians"
    if fmt == "proxyless-yaml":
        if cal and fold:
            table, key = fold_calibration(rows, cal)
            cal.update(folded=True, offset_key=key)
            note = f"calibration v{cal.get('version')} folded in: means scaled by {cal['scale']:.4f}, " \
                   f"offset {cal['offset_ms']:+.3f} ms on {key}"
        else:
            table = {r["key"]: {"count": r["n"], "mean": r["latency_ms"], "var": r["std_ms"] ** 2} for r in rows}
            if cal:
                cal["folded"] = False
                note = f"plain medians; calibration v{cal.get('version')} in the sidecar"
        atomic_write(path, lambda p: p.write_text(yaml.safe_dump(table, sort_keys=True)))
        return [str(path), _sidecar(path, {**meta, "calibration": cal})], note
    if cal:
        cal["folded"] = False
        note = f"plain medians; calibration v{cal.get('version')} in the metadata"
    meta = {**meta, "calibration": cal}
    import pandas as pd

    df = pd.DataFrame(rows).sort_values("key") if rows else pd.DataFrame(columns=["key", "latency_ms"])
    if fmt == "csv":
        atomic_write(path, lambda p: df.to_csv(p, index=False))
        return [str(path), _sidecar(path, meta)], note
    if fmt == "parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise ConfigError("parquet export needs pyarrow: pip install 'hil[parquet]'") from None
        table = pa.Table.from_pandas(df, preserve_index=False)
        table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                               b"hil.fingerprint": json.dumps(meta).encode()})
        atomic_write(path, lambda p: pq.write_table(table, p))
        return [str(path)], note
    raise ConfigError(f"unknown export format {fmt!r}")
