"""Names of the tokens the platform knows; symbols are upper-case base assets."""

TOKEN_NAMES: dict[str, str] = {
    "BTC": "Bitcoin",
    "ETH": "Ethereum",
    "BNB": "BNB",
    "XRP": "XRP",
    "ADA": "Cardano",
    "DOGE": "Dogecoin",
    "SOL": "Solana",
    "LTC": "Litecoin",
}


def token_name(symbol: str) -> str:
    return TOKEN_NAMES.get(symbol, symbol)
