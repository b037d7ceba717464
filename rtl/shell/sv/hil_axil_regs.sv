// AXI4-Lite slave in front of an accelerator core's register port (the harness convention of
// rtl/harness/README.md: reg_wr_en, reg_addr as a 32-bit word index, reg_wdata, combinational
// reg_rdata), plus the AXI shell's own registers (rtl/regmap.py SHELL): DRAM_BASE_LO/HI, the
// physical address of the DRAM window that the AXI master adds to every core address.
//
// One transaction at a time per direction. A write takes AW and W together (ready only when both
// are valid, which AXI allows) and answers OKAY on B. A read is accepted in a cycle with no write,
// because the core has one register port; its data is registered and offered on R. Writes are whole
// 32-bit words: the core has no byte enables, so WSTRB is not looked at (PYNQ's MMIO.write writes
// whole words).
module hil_axil_regs #(
    parameter int AW = 12,           // byte address bits of the AXI-Lite window
    parameter int SHELL_BASE = 'h3F0 // word index of DRAM_BASE_LO; DRAM_BASE_HI is the next one
) (
    input  logic          clk,
    input  logic          rst,         // synchronous, active high (!ARESETN)
    input  logic [AW-1:0] s_axil_awaddr,
    input  logic [2:0]    s_axil_awprot,
    input  logic          s_axil_awvalid,
    output logic          s_axil_awready,
    input  logic [31:0]   s_axil_wdata,
    input  logic [3:0]    s_axil_wstrb,
    input  logic          s_axil_wvalid,
    output logic          s_axil_wready,
    output logic [1:0]    s_axil_bresp,
    output logic          s_axil_bvalid,
    input  logic          s_axil_bready,
    input  logic [AW-1:0] s_axil_araddr,
    input  logic [2:0]    s_axil_arprot,
    input  logic          s_axil_arvalid,
    output logic          s_axil_arready,
    output logic [31:0]   s_axil_rdata,
    output logic [1:0]    s_axil_rresp,
    output logic          s_axil_rvalid,
    input  logic          s_axil_rready,
    output logic          reg_wr_en,
    output logic [15:0]   reg_addr,
    output logic [31:0]   reg_wdata,
    input  logic [31:0]   reg_rdata,
    output logic [63:0]   dram_base
);
  wire [15:0] widx = 16'(s_axil_awaddr >> 2);
  wire [15:0] ridx = 16'(s_axil_araddr >> 2);
  wire do_write = s_axil_awvalid && s_axil_wvalid && !s_axil_bvalid;
  wire do_read = s_axil_arvalid && !s_axil_rvalid && !do_write;
  wire w_shell = widx == 16'(SHELL_BASE) || widx == 16'(SHELL_BASE + 1);

  assign s_axil_awready = do_write;
  assign s_axil_wready = do_write;
  assign s_axil_arready = do_read;
  assign s_axil_bresp = 2'b00;
  assign s_axil_rresp = 2'b00;
  assign reg_wr_en = do_write && !w_shell;
  assign reg_addr = do_write ? widx : ridx;
  assign reg_wdata = s_axil_wdata;

  always_ff @(posedge clk) begin
    if (rst) begin
      s_axil_bvalid <= 1'b0;
      s_axil_rvalid <= 1'b0;
      s_axil_rdata <= '0;
      dram_base <= '0;
    end else begin
      if (s_axil_bvalid && s_axil_bready) s_axil_bvalid <= 1'b0;
      if (do_write) begin
        s_axil_bvalid <= 1'b1;
        if (widx == 16'(SHELL_BASE)) dram_base[31:0] <= s_axil_wdata;
        if (widx == 16'(SHELL_BASE + 1)) dram_base[63:32] <= s_axil_wdata;
      end
      if (s_axil_rvalid && s_axil_rready) s_axil_rvalid <= 1'b0;
      if (do_read) begin
        s_axil_rvalid <= 1'b1;
        s_axil_rdata <= ridx == 16'(SHELL_BASE) ? dram_base[31:0] :
                        ridx == 16'(SHELL_BASE + 1) ? dram_base[63:32] : reg_rdata;
      end
    end
  end

  wire unused = ^{s_axil_awprot, s_axil_arprot, s_axil_wstrb};
endmodule
