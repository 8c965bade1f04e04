"""Escalade tools: model building, the demo, benchmarks."""

__all__: list[str] = []
