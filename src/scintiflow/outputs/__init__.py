"""What a night publishes: report, DICOM Secondary Capture, manifest, ledger."""
