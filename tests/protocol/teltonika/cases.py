"""Teltonika's published example frames ("Teltonika Data Sending Protocols" on Teltonika's wiki),
each with the frame it must decode to, written out field by field from the wiki's own parse
tables: these are the bytes real FMB devices produce, not our encoder's."""

from __future__ import annotations

from dataclasses import dataclass

from protocol.teltonika import (
    AvlPacket,
    AvlRecord,
    Codec,
    Command,
    Frame,
    Generation,
    Imei,
    Priority,
    Response,
)


@dataclass(frozen=True)
class Case:
    id: str
    hex: str
    frame: Frame

    @property
    def data(self) -> bytes:
        return bytes.fromhex(self.hex)


# "Module connects to server and sends IMEI": 000F = 15 digits.
IMEI = Case("imei", "000F333536333037303432343431303133", Imei("356307042441013"))

# Codec 8, 1st example: one record, 2019-06-10T10:04:46Z, no fix, event IO id 1 (DIN1),
# N1 = 2 (21 GSM signal = 3, 1 DIN1 = 1), N2 = 1 (66 external voltage = 0x5E0F = 24,079 mV),
# N4 = 1 (241 active GSM operator = 0x601A = 24,602), N8 = 1 (78 iButton = 0). CRC 0000C7CF.
CODEC8_1 = Case(
    "codec8_1",
    "000000000000003608010000016B40D8EA30010000000000000000000000000000000105021503010101425E0F"
    "01F10000601A014E0000000000000000010000C7CF",
    AvlPacket(
        Codec.CODEC_8,
        (
            AvlRecord(
                time_ms=0x16B40D8EA30,  # 1,560,161,086,000 ms
                priority=Priority.HIGH,
                lon_e7=0,
                lat_e7=0,
                altitude_m=0,
                angle_deg=0,
                satellites=0,
                speed_kmh=0,
                event_id=1,
                io1=((21, 3), (1, 1)),
                io2=((66, 0x5E0F),),
                io4=((241, 0x601A),),
                io8=((78, 0),),
            ),
        ),
    ),
)

# Codec 8, 2nd example: N1 = 2 (21 = 3, 1 = 1), N2 = 1 (66 = 0x5E10), no 4- or 8-byte elements.
CODEC8_2 = Case(
    "codec8_2",
    "000000000000002808010000016B40D9AD80010000000000000000000000000000000103021503010101425E10"
    "0000010000F22A",
    AvlPacket(
        Codec.CODEC_8,
        (
            AvlRecord(
                time_ms=0x16B40D9AD80,  # 1,560,161,136,000 ms
                priority=Priority.HIGH,
                lon_e7=0,
                lat_e7=0,
                altitude_m=0,
                angle_deg=0,
                satellites=0,
                speed_kmh=0,
                event_id=1,
                io1=((21, 3), (1, 1)),
                io2=((66, 0x5E10),),
            ),
        ),
    ),
)

# Codec 8, 3rd example: two records, each with one element (1 DIN1 = 0, then 1).
CODEC8_3 = Case(
    "codec8_3",
    "000000000000004308020000016B40D57B480100000000000000000000000000000001010101000000000000016B"
    "40D5C198010000000000000000000000000000000101010101000000020000252C",
    AvlPacket(
        Codec.CODEC_8,
        (
            AvlRecord(0x16B40D57B48, Priority.HIGH, 0, 0, 0, 0, 0, 0, 1, io1=((1, 0),)),
            AvlRecord(0x16B40D5C198, Priority.HIGH, 0, 0, 0, 0, 0, 0, 1, io1=((1, 1),)),
        ),
    ),
)

# Codec 8 Extended: 2-byte ids and counts. N1 = 1 (1 DIN1 = 1), N2 = 1 (17 axis X = 0x1D),
# N4 = 1 (16 total odometer = 0x015E2C88 m), N8 = 2 (11 ICCID1 = 0x3544C87A, 14 ICCID2 =
# 0x1DD7E06A), NX = 0. CRC 00002994.
CODEC8E = Case(
    "codec8e",
    "000000000000004A8E010000016B412CEE000100000000000000000000000000000000010005000100010100010011"
    "001D00010010015E2C880002000B000000003544C87A000E000000001DD7E06A00000100002994",
    AvlPacket(
        Codec.CODEC_8E,
        (
            AvlRecord(
                time_ms=0x16B412CEE00,  # 1,560,166,592,000 ms
                priority=Priority.HIGH,
                lon_e7=0,
                lat_e7=0,
                altitude_m=0,
                angle_deg=0,
                satellites=0,
                speed_kmh=0,
                event_id=1,
                io1=((1, 1),),
                io2=((17, 0x1D),),
                io4=((16, 0x015E2C88),),
                io8=((11, 0x3544C87A), (14, 0x1DD7E06A)),
            ),
        ),
    ),
)

# Codec 16: 2-byte ids, 1-byte counts, generation type 5 (on change), event IO id 11.
CODEC16 = Case(
    "codec16",
    "000000000000005F10020000016BDBC7833000000000000000000000000000000000000B05040200010000030002"
    "000B00270042563A00000000016BDBC7871800000000000000000000000000000000000B05040200010000030002"
    "000B00260042563A00000200005FB3",
    AvlPacket(
        Codec.CODEC_16,
        (
            AvlRecord(
                0x16BDBC78330,
                Priority.LOW,
                0,
                0,
                0,
                0,
                0,
                0,
                11,
                io1=((1, 0), (3, 0)),
                io2=((11, 0x27), (66, 0x563A)),
                generation=Generation.ON_CHANGE,
            ),
            AvlRecord(
                0x16BDBC78718,
                Priority.LOW,
                0,
                0,
                0,
                0,
                0,
                0,
                11,
                io1=((1, 0), (3, 0)),
                io2=((11, 0x26), (66, 0x563A)),
                generation=Generation.ON_CHANGE,
            ),
        ),
    ),
)

# Codec 12, server → box: "getinfo". CRC 00004312.
GETINFO = Case("codec12_getinfo", "000000000000000F0C010500000007676574696E666F0100004312",
               Command("getinfo"))  # fmt: skip

# Codec 12, box → server: the answer to getinfo. CRC 0000C78F.
GETINFO_RESPONSE = Case(
    "codec12_getinfo_response",
    "00000000000000900C010600000088494E493A323031392F372F323220373A3232205254433A323031392F372F3232"
    "20373A3533205253543A32204552523A312053523A302042523A302043463A302046473A3020464C3A302054553A30"
    "2F302055543A3020534D533A30204E4F4750533A303A3330204750533A31205341543A302052533A332052463A3635"
    "2053463A31204D443A30010000C78F",
    Response(
        "INI:2019/7/22 7:22 RTC:2019/7/22 7:53 RST:2 ERR:1 SR:0 BR:0 CF:0 FG:0 FL:0 TU:0/0 UT:0"
        " SMS:0 NOGPS:0:30 GPS:1 SAT:0 RS:3 RF:65 SF:1 MD:0"
    ),
)

PACKETS = [CODEC8_1, CODEC8_2, CODEC8_3, CODEC8E, CODEC16, GETINFO, GETINFO_RESPONSE]
CASES = [IMEI, *PACKETS]
CASE_IDS = [c.id for c in CASES]
PACKET_IDS = [c.id for c in PACKETS]
