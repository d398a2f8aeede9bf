"""ferry.dev/v1alpha1: the InferenceEndpoint and ProviderConfig types."""
