"""Tests of the trainer (trainer/): data sets, domain images, evaluation, reference model, end-to-end training."""
