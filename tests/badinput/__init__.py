"""Bad input battery: every malformed input refused with the right CNI code, nothing changed."""
