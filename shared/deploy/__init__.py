"""Deploy jobs: building one, the deployment state machine, repository URLs, the build log."""
