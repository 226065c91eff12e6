"""A small shop that sends its slow work to Faktory: see README.md here."""
