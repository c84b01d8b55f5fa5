"""AVL ids (IO element ids) of Teltonika's FMB/FMC/FMM devices that gp8 gives a meaning to.

From Teltonika's "FMB Teltonika Data Sending Parameters ID" tables. The codec carries every id
whatever its meaning; this table only names the ones the gateway's default device profile maps
(gateway/adapters/teltonika.py), so that the profile, the simulator and the tests spell them the
same way. Values are unsigned on the wire; the unit or enumeration is in each comment.
"""

from __future__ import annotations

from enum import IntEnum


class AvlId(IntEnum):
    DIGITAL_INPUT_1 = 1  # 0/1
    DIGITAL_INPUT_2 = 2
    TOTAL_ODOMETER = 16  # m, 4 bytes
    GSM_SIGNAL = 21  # bars, 0..5
    SPEED = 24  # km/h
    EXTERNAL_VOLTAGE = 66  # mV
    BATTERY_VOLTAGE = 67  # mV
    BATTERY_CURRENT = 68  # mA
    GNSS_STATUS = 69  # 0 off, 1 on with fix, 2 on without fix, 3 sleep
    IBUTTON = 78  # iButton id, 8 bytes, 0 when none
    DATA_MODE = 80
    GEOFENCE_ZONE_1 = 155  # 0 left, 1 entered (zones 2..5 are 156..159)
    GEOFENCE_ZONE_2 = 156
    GEOFENCE_ZONE_3 = 157
    GEOFENCE_ZONE_4 = 158
    GEOFENCE_ZONE_5 = 159
    AUTO_GEOFENCE = 175  # 0 target left, 1 target entered
    DIGITAL_OUTPUT_1 = 179  # 0/1
    DIGITAL_OUTPUT_2 = 180
    GNSS_PDOP = 181  # 0.1
    GNSS_HDOP = 182  # 0.1
    SLEEP_MODE = 200
    IGNITION = 239  # 0/1
    MOVEMENT = 240  # 0/1
    ACTIVE_GSM_OPERATOR = 241
    TOWING = 246  # 0 steady, 1 towing
    CRASH_DETECTION = 247  # 1 crash, 2 limited crash trace (device not calibrated), ...
    IMMOBILIZER = 248
    JAMMING = 249  # GSM jamming: 0 stopped, 1 started
    TRIP = 250  # 0 stop, 1 start
    IDLING = 251  # 0 moving, 1 idling
    UNPLUG = 252  # 0 battery present, 1 unplugged
    GREEN_DRIVING_TYPE = 253  # 1 harsh acceleration, 2 harsh braking, 3 harsh cornering
    GREEN_DRIVING_VALUE = 254  # g x 100 for acceleration and braking, rad x 100 for cornering
    OVERSPEEDING = 255  # km/h at the start of the overspeeding
    GNSS_JAMMING = 318  # 0 ready, 1 warning, 2 critical (2-byte id: Codec 8 Extended)
