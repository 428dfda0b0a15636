"""HTTP routes; each stays thin: validate, hand over to the scorer or the model manager, shape the answer."""
