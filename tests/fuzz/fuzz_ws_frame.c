/* libFuzzer target: bytes as what a WebSocket client sends, parsed frame
 * by frame the way api/streams.c does (a fixed buffer, the 8 KiB message
 * budget, unmasking, continuation rules), so the parser's every verdict is
 * exercised and no declared length makes anything read past the input. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api/wire_internal.h"

#define LIMIT 8192

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t msg[LIMIT];
    size_t msg_len = 0, off = 0;
    int msg_opcode = 0;
    while (off < size) {
        struct api_ws_frame f;
        int rc = api__ws_frame_parse(data + off, size - off, LIMIT, &f);
        if (rc <= 0)
            return 0; /* refused, or incomplete: a real client would send more */
        if (f.len > LIMIT || f.header_len > 14 || (f.opcode & 0x8 && f.len > 125))
            abort(); /* the parser let through what it must refuse */
        if (!(f.opcode & 0x8) && f.len > LIMIT - msg_len)
            return 0; /* 1009 */
        if (size - off - f.header_len < f.len)
            return 0;
        uint8_t payload[LIMIT];
        memcpy(payload, data + off + f.header_len, (size_t)f.len);
        api__ws_unmask(payload, (size_t)f.len, f.mask, 0);
        if (!(f.opcode & 0x8)) {
            if ((f.opcode == API_WS_CONT) != (msg_opcode != 0))
                return 0; /* 1002 */
            if (f.opcode != API_WS_CONT)
                msg_opcode = f.opcode;
            memcpy(msg + msg_len, payload, (size_t)f.len);
            msg_len += (size_t)f.len;
            if (f.fin) {
                (void)api__utf8_valid((const char *)msg, msg_len);
                msg_len = 0;
                msg_opcode = 0;
            }
        }
        off += f.header_len + (size_t)f.len;
    }
    uint8_t head[10];
    (void)api__ws_frame_header(head, API_WS_TEXT, size);
    char acc[29];
    char key[25];
    if (size >= 24) {
        memcpy(key, data, 24);
        key[24] = '\0';
        (void)api__ws_accept(key, acc);
    }
    return 0;
}
