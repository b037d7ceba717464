"""LUT exporters. Every export carries the fingerprint of the measurements it came from.

- proxyless-yaml: `{key: {count, mean, var}}` in ms, the format ProxylessNAS's LatencyEstimator reads
  (it reads `mean` as the latency: we put our latency, the median, there; `var` is the sample
  variance). The fingerprint goes to a `.fingerprint.json` sidecar so the YAML stays readable by it.
- csv: one row per entry + the same sidecar.
- parquet: one row per entry, the fingerprint in the file's key-value metadata.
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


def export_lut(rows: list[dict[str, Any]], meta: dict[str, Any], fmt: str, output: str) -> list[str]:
    path = Path(output)
    if not path.parent.exists():
        raise ConfigError(f"{output}: folder {path.parent} does not exist")
    if fmt == "proxyless-yaml":
        table = {r["key"]: {"count": r["n"], "mean": r["latency_ms"], "var": r["std_ms"] ** 2} for r in rows}
        atomic_write(path, lambda p: p.write_text(yaml.safe_dump(table, sort_keys=True)))
        return [str(path), _sidecar(path, meta)]
    import pandas as pd

    df = pd.DataFrame(rows).sort_values("key") if rows else pd.DataFrame(columns=["key", "latency_ms"])
    if fmt == "csv":
        atomic_write(path, lambda p: df.to_csv(p, index=False))
        return [str(path), _sidecar(path, meta)]
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
        return [str(path)]
    raise ConfigError(f"unknown export format {fmt!r}")
