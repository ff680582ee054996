"""What-if views of recommendation strategies: off-policy estimates from logged data."""
