"""An in-repo fake Kubernetes API server and Velero simulator (Kubernetes cannot run on CI machines)."""
