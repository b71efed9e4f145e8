"""Raw interaction logs -> cleaned, split, sharded Parquet (SPEC §2); entry point `prepare.run_prepare`."""
