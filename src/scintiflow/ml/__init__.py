"""Models, preprocessing, training, evaluation, the study protocol and the registry."""
