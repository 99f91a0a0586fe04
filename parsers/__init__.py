"""Pure parsers: raw email or webhook payload -> Signals. One module per format."""
