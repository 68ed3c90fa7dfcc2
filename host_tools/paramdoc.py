"""What each terminal parameter means, for `termctl params show` and docs.

Kept out of firmware/terminal/params.py: on a board these strings would cost
heap for text only the host prints.
"""

MEANING = {
    "floor_limit": "amount at or above which a sale goes online",
    "daily_offline_cap": "card-side offline amount per day",
    "cumulative_offline_cap": "card-side offline amount since online",
    "terminal_daily_cap": "this terminal's offline amount per card/day",
    "lower_consecutive_offline": "ATC - last online ATC above this: go online",
    "upper_consecutive_offline": "ATC - last online ATC above this: decline",
    "random_target_pct": "EMV target percentage TP",
    "random_max_target_pct": "EMV maximum target percentage MTP",
    "random_threshold": "EMV threshold T, below the floor limit",
    "split_window_s": "window in which a card's last sale is added (split sale)",
    "decline_limit": "declines of one card per day before it is refused locally",
    "enum_distinct_limit": "distinct unknown cards in the window: online-only",
    "enum_window_min": "enumeration window, minutes",
    "enum_lockout_min": "online-only period after an enumeration alert, minutes",
    "business_day_cutover_min": "minute of the day (UTC) the business day starts",
    "online_timeout_ms": "wait for the centre's answer before the default",
    "listed_action": "negative-list hit: 0 decline, 1 go online",
    "offline_default": "unable to go online: 0 decline, 1 approve",
    "journal_near_full_pct": "journal fill at which new sales go online-only",
    "new_card_online": "card never online (last online ATC 0): 1 go online",
}
