"""fracsight as a DICOM node: results as DICOM objects (highdicom), a C-STORE receiver with a
durable spool, result routing over DIMSE and DICOMweb. See docs/dicom.md."""
