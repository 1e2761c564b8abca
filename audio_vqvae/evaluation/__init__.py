"""Evaluation behind `audio-vqvae-eval`: the scored sets (`sets`), the pass over them (`scoring`), unit quality
against the MFCC k-means baseline (`units`, `baselines`, `probes`), resynthesis and conversion (`resynthesis`), the
learned prior (`prior`), the exact posterior probe (`posterior`) and metrics.json + report.md (`report`). Training
never imports this package; what both need (metric math, stability, plots, reading audio) lives one level up."""
