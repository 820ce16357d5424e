"""Everything openwit writes into OUT and reads back: the layout (every path), files, the
manifest, the ledger and the shards once written."""
