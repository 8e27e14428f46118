"""Datasets: the prepared format, converters from public benchmarks, synthetic shapes."""
