"""Ferry API types and the CRD generator."""
