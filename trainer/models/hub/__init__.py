"""TF Hub encoders with their preprocessing models (BERT, ALBERT, small BERTs, ...)."""
