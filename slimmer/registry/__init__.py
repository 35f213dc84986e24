"""The OCI distribution API client: authentication, push."""
