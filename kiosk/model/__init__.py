"""The classifier stage: manifests, the LiteRT runtime, the classifier, the OOD gate, installs."""
