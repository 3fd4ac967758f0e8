"""Live retrace servers, their settings, and the archives sent to them."""
