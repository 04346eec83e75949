"""The providers: deployments from ``model_list``, the HTTP client and stream relay."""
