"""Helpers the tests share: small nets, a trained digits model, Paddle op runners, Paddle Inference predictors."""
