"""Everything openwit writes into OUT and reads back: files, ledger."""
