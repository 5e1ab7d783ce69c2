"""Prometheus text exposition shared by the gateway and the central service."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

Sample = tuple[str, str, Mapping[str, str], float]
"""(metric name, type: counter|gauge, labels, value)."""


def render_metrics(samples: Iterable[Sample]) -> str:
    """Prometheus text exposition of samples, one ``# TYPE`` line per metric name."""
    lines: list[str] = []
    declared: set[str] = set()
    for name, kind, labels, value in samples:
        if name not in declared:
            lines.append(f"# TYPE {name} {kind}")
            declared.add(name)
        label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
        lines.append(f"{name}{{{label_text}}} {value}" if label_text else f"{name} {value}")
    return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
