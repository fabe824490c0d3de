"""Operations: what the person running keywheel watches and acts with (metrics, key checks, credits)."""
