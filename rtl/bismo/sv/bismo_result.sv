// Result stage: writes one DM x DN tile of int32 results from a DPU result slot to DRAM, row by
// row with a row stride.
//
// Instruction (128 bits): [31:0] DRAM byte address of row 0   [63:32] row stride (bytes)
//   [64] result slot   [65] wait "result ready"   [66] send "result slot free" when written
// A row is DN*4 bytes. With DN*32 >= DW it is DN*32/DW full beats (address and stride aligned to
// the beat); otherwise it is one beat with byte enables (row address aligned to DN*4 bytes).
module bismo_result #(
    parameter int DM = 8,
    parameter int DN = 8,
    parameter int DW = 256
) (
    input  logic                         clk,
    input  logic                         clr,
    input  logic                         ins_valid,
    output logic                         ins_ready,
    input  logic [127:0]                 ins,
    input  logic                         res_full_avail,
    output logic                         res_full_take,
    output logic                         res_free_send,
    input  logic [DM-1:0][DN-1:0][31:0]  res0,
    input  logic [DM-1:0][DN-1:0][31:0]  res1,
    output logic                         wr_valid,
    input  logic                         wr_ready,
    output logic [31:0]                  wr_addr,
    output logic [DW-1:0]                wr_data,
    output logic [DW/8-1:0]              wr_strb,
    output logic [15:0]                  wr_bytes,  // enabled bytes of the beat on offer
    output logic                         idle,
    output logic                         tok_stall
);
  localparam int BYTES = DW / 8;
  localparam int ROWB = DN * 4;
  localparam bit FULL = DN * 32 >= DW;
  localparam int PB = FULL ? DN * 32 / DW : 1;  // beats per row
  localparam int TOTAL = DM * PB;
  localparam int OW = $clog2(BYTES);

  logic act, slot, send;
  logic [31:0] row_addr, stride;
  logic [15:0] loaded, p;
  logic [7:0] row;

  wire tok_ok = !ins[65] || res_full_avail;
  assign ins_ready = !act && tok_ok;
  wire start = ins_valid && ins_ready;
  assign res_full_take = start && ins[65];
  assign tok_stall = ins_valid && !act && !tok_ok;

  wire fire = wr_valid && wr_ready;
  wire all_loaded = loaded == 16'(TOTAL);
  wire can_load = act && !all_loaded && (!wr_valid || fire);
  wire finish = act && all_loaded && (!wr_valid || fire);
  assign res_free_send = finish && send;
  assign idle = !act;
  assign wr_bytes = FULL ? 16'(BYTES) : 16'(ROWB);

  always_ff @(posedge clk) begin
    if (clr) begin
      act <= 1'b0;
      wr_valid <= 1'b0;
    end else begin
      if (start) begin
        act <= 1'b1;
        row_addr <= ins[31:0];
        stride <= ins[63:32];
        slot <= ins[64];
        send <= ins[66];
        loaded <= '0;
        p <= '0;
        row <= '0;
      end
      if (can_load) begin
        logic [DN*32-1:0] rowbits;
        rowbits = slot ? res1[row] : res0[row];
        wr_valid <= 1'b1;
        if (FULL) begin
          wr_data <= DW'(rowbits >> (p * DW));
          wr_addr <= row_addr + 32'(p) * BYTES;
          wr_strb <= '1;
        end else begin
          wr_data <= DW'(rowbits) << (8 * row_addr[OW-1:0]);
          wr_strb <= (DW/8)'({ROWB{1'b1}}) << row_addr[OW-1:0];
          wr_addr <= row_addr & ~32'(BYTES - 1);
        end
        loaded <= loaded + 1;
        if (p == 16'(PB - 1)) begin
          p <= '0;
          row <= row + 1;
          row_addr <= row_addr + stride;
        end else begin
          p <= p + 1;
        end
      end else if (fire) begin
        wr_valid <= 1'b0;
      end
      if (finish) act <= 1'b0;
    end
  end
endmodule
