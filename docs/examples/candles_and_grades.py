# %% [markdown]
# # Candles into pandas, grades on a chart
#
# A notebook-style tour of the Python SDK (`clients/python`). Open it as a notebook (VS Code and
# Jupyter with jupytext read the `# %%` cells) or run it as a script:
#
# ```bash
# pip install 'tokenpulse-client[pandas]' matplotlib        # in the repository: make install
# TOKENPULSE_BASE_URL=http://127.0.0.1:8000 python docs/examples/candles_and_grades.py
# ```
#
# It reads `TOKENPULSE_API_KEY` (or asks the server for a free key), fetches BTC's daily candles into a
# DataFrame, and plots its Trader and Investor Grades under the price to `TOKENPULSE_PLOT` (grades.png).

# %%
import os

import matplotlib

matplotlib.use("Agg")  # no window: the chart goes to a file
import matplotlib.pyplot as plt
from tokenpulse_client import Client

BASE_URL = os.environ.get("TOKENPULSE_BASE_URL", "http://127.0.0.1:8000")
SYMBOL, SINCE = os.environ.get("TOKENPULSE_SYMBOL", "BTC"), os.environ.get("TOKENPULSE_SINCE", "2024-01-01")
tp = Client(BASE_URL)
if not tp.api_key:
    tp.api_key = tp.create_key("candles and grades example").key

# %% [markdown]
# ## Candles into pandas
#
# `candles()` follows the API's pages for you; `.to_pandas()` gives one column per field, `ts` as
# timezone-aware UTC times (each candle's open).

# %%
candles = tp.candles(SYMBOL, "1d", start=SINCE).to_pandas().set_index("ts")
candles["return_30d_pct"] = candles["close"].pct_change(30) * 100
print(f"{len(candles)} daily candles of {SYMBOL} since {SINCE}, last close ${candles['close'].iloc[-1]:,.2f}")
print(candles[["open", "high", "low", "close", "volume", "return_30d_pct"]].tail(5).round(2).to_string())

# %% [markdown]
# ## Grades under the price
#
# Trader Grade (short-term) and Investor Grade (long-term) are daily scores on 0..100; the dashed lines
# at 60 and 40 are where the Trader Grade turns the signal bullish or bearish (docs/methodology.md).

# %%
grades = tp.grades(SYMBOL, start=SINCE).to_pandas().set_index("ts")
fig, (price_ax, grade_ax) = plt.subplots(2, 1, figsize=(10, 6), sharex=True, height_ratios=[2, 1])
price_ax.plot(candles.index, candles["close"], color="black", linewidth=1)
price_ax.set_ylabel(f"{SYMBOL} close (USD)")
price_ax.set_title(f"{SYMBOL}: daily close and Tokenpulse grades")
grade_ax.plot(grades.index, grades["trader_grade"], label="Trader Grade", linewidth=1)
grade_ax.plot(grades.index, grades["investor_grade"], label="Investor Grade", linewidth=1)
for level in (40, 60):
    grade_ax.axhline(level, color="grey", linestyle="--", linewidth=0.6)
grade_ax.set_ylim(0, 100)
grade_ax.set_ylabel("grade (0..100)")
grade_ax.legend(loc="lower left", ncols=2)
fig.tight_layout()
out = os.environ.get("TOKENPULSE_PLOT", "grades.png")
fig.savefig(out, dpi=100)
latest = grades.iloc[-1]
day = f"{grades.index[-1]:%Y-%m-%d}"
print(f"grades on {day}: trader {latest['trader_grade']:.1f}, investor {latest['investor_grade']:.1f}")
print(f"chart: {out}")
