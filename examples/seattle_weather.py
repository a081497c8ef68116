# Seattle weather 2012-2015: a stateful, multi-step analysis run cell by cell in one kernel.
#
# Run it with:  kernelbox run examples/seattle_weather.py --images-dir images
# Data: the daily Seattle weather observations (NOAA) that the `vega_datasets` package ships
# offline (1,461 days, 2012-01-01 .. 2015-12-31). Every cell below runs in the same kernel, so
# the data frame loaded in the first cell is still there in the last.

# %% Load the data once
from vega_datasets import local_data

weather = local_data.seattle_weather()
print(f"{len(weather):,} daily observations, {weather['date'].min():%Y-%m-%d} to {weather['date'].max():%Y-%m-%d}")
print("columns:", ", ".join(weather.columns))

# %% Inspect
print(weather.describe().round(1).to_string())
print()
print("weather labels:", weather["weather"].value_counts().to_dict())
print("missing values:", int(weather.isna().sum().sum()))

# %% Clean: types, derived columns, sanity checks
import pandas as pd

weather = weather.drop_duplicates(subset="date").sort_values("date").reset_index(drop=True)
weather["weather"] = weather["weather"].astype("category")
weather["temp_mean"] = (weather["temp_max"] + weather["temp_min"]) / 2
weather["year"] = weather["date"].dt.year
weather["month"] = weather["date"].dt.month
bad_ranges = weather[weather["temp_min"] > weather["temp_max"]]
assert bad_ranges.empty, f"{len(bad_ranges)} days with temp_min > temp_max"
assert weather["date"].is_unique and len(weather) == 1461
print("clean: unique dates, temp_min <= temp_max on every day, derived temp_mean/year/month")

# %% Aggregate: monthly climate and yearly totals
monthly = weather.groupby("month").agg(
    temp_max=("temp_max", "mean"),
    temp_min=("temp_min", "mean"),
    precipitation=("precipitation", "mean"),
    rainy_days=("precipitation", lambda p: (p > 0).mean() * 100),
)
yearly = weather.groupby("year").agg(
    precipitation_mm=("precipitation", "sum"),
    hottest_c=("temp_max", "max"),
    coldest_c=("temp_min", "min"),
)
print("Monthly averages (mm/day, % of days with rain):")
print(monthly.round(1).to_string())
print()
print("Yearly totals:")
print(yearly.round(1).to_string())
wettest = monthly["precipitation"].idxmax()
driest = monthly["precipitation"].idxmin()
print(f"\nwettest month: {wettest}, driest month: {driest}")

# %% Chart 1: monthly temperature range and precipitation
import calendar

import matplotlib.pyplot as plt

fig, ax_temp = plt.subplots(figsize=(9, 4.5))
months = [calendar.month_abbr[m] for m in monthly.index]
ax_temp.fill_between(months, monthly["temp_min"], monthly["temp_max"], alpha=0.3, color="tab:red",
                     label="mean daily min-max (°C)")
ax_temp.plot(months, (monthly["temp_min"] + monthly["temp_max"]) / 2, color="tab:red", label="mean (°C)")
ax_temp.set_ylabel("temperature (°C)")
ax_rain = ax_temp.twinx()
ax_rain.bar(months, monthly["precipitation"], alpha=0.35, color="tab:blue", label="precipitation (mm/day)")
ax_rain.set_ylabel("precipitation (mm/day)")
ax_temp.set_zorder(ax_rain.get_zorder() + 1)  # draw the temperatures over the bars
ax_temp.patch.set_visible(False)
ax_temp.set_title("Seattle climate by month, 2012-2015")
fig.legend(loc="upper left", bbox_to_anchor=(0.08, 0.88))
fig.tight_layout()
plt.show()

# %% Chart 2: how often each kind of weather occurs, by month
counts = pd.crosstab(weather["month"], weather["weather"], normalize="index") * 100
ax = counts.plot(kind="bar", stacked=True, figsize=(9, 4.5), colormap="tab20c", width=0.85)
ax.set_xticklabels(months, rotation=0)
ax.set_ylabel("share of days (%)")
ax.set_title("Weather type by month, Seattle 2012-2015")
ax.legend(title="weather", bbox_to_anchor=(1.0, 1.0), loc="upper left")
plt.tight_layout()
plt.show()

# %% Summary
sunny_share = (weather["weather"] == "sun").mean() * 100
print(f"Days labelled sun: {sunny_share:.0f}%")
print(f"Rainiest year: {yearly['precipitation_mm'].idxmax()} ({yearly['precipitation_mm'].max():.0f} mm)")
print(f"July is {monthly.loc[7, 'temp_max'] - monthly.loc[1, 'temp_max']:.1f} °C warmer than January at midday")
