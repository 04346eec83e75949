"""One metered call: identify the caller, check, call upstream, settle, release."""
