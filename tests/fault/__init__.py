"""The fault suite: faults injected into real processes, checked with a total-queue checker."""
