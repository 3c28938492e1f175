"""wattwise.runtime: what runs on the device. numpy + the standard library only."""
