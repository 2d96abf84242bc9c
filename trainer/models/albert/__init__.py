"""Native ALBERT: factorized embeddings, one transformer block shared by every layer, tanh pooler."""
