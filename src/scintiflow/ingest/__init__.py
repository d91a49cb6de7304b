"""Reading a night's exports: listing, fetching, DICOM decoding."""
