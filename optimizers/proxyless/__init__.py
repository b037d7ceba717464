"""ProxylessNAS (Cai, Zhu, Han, ICLR 2019): hardware-specialized architecture search driven by a
device's LUT. supernet: mixed ops and path binarization; latency: E[LAT] and the latency losses;
search: the schedule and its checkpoints; arch: the result file, plots, retraining; run: all of it
as the CLI runs it. docs/NAS.md says how it fits together."""
