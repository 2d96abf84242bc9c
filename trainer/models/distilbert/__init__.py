"""Native DistilBERT: BERT's blocks without token types or pooler; [CLS] through a ReLU pre-classifier."""
