"""One GLUE fine-tuning trial: data, metrics, model, training loop and the Ray Tune trainable."""
