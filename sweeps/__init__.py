"""QR-LoRA sweeps: launching them and analysing their MLflow records (e.g. Pareto fronts)."""
